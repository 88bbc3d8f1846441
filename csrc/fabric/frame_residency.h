// Which frames of one fabric pool are resident, and which give way when the
// pool runs short. Every layer that keeps frames in a pool (the emulator
// driver, the device's ternary op) registers them here, so one policy
// holds for all of them:
// - a frame is added resident; each use is a hit (resident) or a miss
//   (evicted: the owner reloads it and says so with set_resident);
// - when an allocation finds the pool full (the pool's pressure callback),
//   resident frames give way least recently used first: the frame's evict
//   function frees its pool memory (saving its bytes first if the owner
//   cannot rebuild them) and the frame is counted as an eviction;
// - a pinned frame (kFlagPinned at add) is never evicted, nor a frame while
//   a Use of it is alive (a task or call reading it).
// Lock order: an evict function runs under the manager's lock and may take
// its owner's lock, so an owner never calls the manager while holding its
// own lock. An evict function must not allocate from the pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#include "fabric/fabric_pool.h"
#include "fabric/telemetry.h"

namespace tfmbs::fabric {

class FrameResidency {
 public:
  using Id = uint64_t;
  using Evict = std::function<void()>;

  // Adds the pool's pressure callback; counts into `telemetry`. Both must
  // outlive the manager.
  FrameResidency(FabricPool& pool, Telemetry& telemetry);
  ~FrameResidency();  // removes the callback (waits for a call in progress)
  FrameResidency(const FrameResidency&) = delete;
  FrameResidency& operator=(const FrameResidency&) = delete;

  // A frame of `bytes` pool bytes, resident now.
  Id add(size_t bytes, bool pinned, Evict evict);
  // The frame is gone (its memory is its owner's business).
  void remove(Id id);

  // A use of a frame: keeps it from eviction while alive.
  class Use {
   public:
    Use() = default;
    Use(Use&& other) noexcept;
    Use& operator=(Use&& other) noexcept;
    ~Use();
    // Whether the frame was resident when the use began (a hit).
    bool hit() const { return hit_; }

   private:
    friend class FrameResidency;
    Use(FrameResidency* owner, Id id, bool hit) : owner_(owner), id_(id), hit_(hit) {}
    void release();
    FrameResidency* owner_ = nullptr;
    Id id_ = 0;
    bool hit_ = false;
  };
  // Counts a hit or a miss and makes the frame the most recently used.
  Use use(Id id);
  // Keeps a frame from eviction without counting a use: for the owner that
  // has just added it and is about to run on it.
  Use hold(Id id);
  // After a miss: the owner reloaded the frame's `bytes` into the pool.
  void set_resident(Id id, size_t bytes);

  // Evicts least recently used frames until `needed` bytes are freed or
  // none is evictable; returns the bytes freed.
  size_t evict(size_t needed);
  bool has_evictable() const;
  bool is_resident(Id id) const;
  size_t frames() const;
  size_t resident_bytes() const;

 private:
  struct Frame {
    size_t bytes = 0;
    bool pinned = false;
    bool resident = true;
    int uses = 0;
    uint64_t last_use = 0;
    Evict evict;
  };
  static bool evictable(const Frame& f) { return f.resident && !f.pinned && f.uses == 0; }
  Frame& at(Id id);

  FabricPool& pool_;
  Telemetry& telemetry_;
  FabricPool::CallbackId callback_ = 0;
  mutable std::mutex mu_;
  std::map<Id, Frame> frames_;
  Id next_id_ = 1;
  uint64_t clock_ = 0;  // ticks per add or use: the LRU order
};

}  // namespace tfmbs::fabric
