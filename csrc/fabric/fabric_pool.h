// The fabric pool: the memory a fabric instance owns, and its caching
// allocator. Plain C++ (no torch), modelled on c10's CUDACachingAllocator:
// segments are reserved from a fixed-capacity address range, blocks are
// carved from segments (best fit, split, coalesce) and cached when freed;
// release_cache() hands fully free segments back to the pool.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "fabric/pool_history.h"

namespace tfmbs::fabric {

// Every block is aligned to, and a multiple of, this many bytes.
inline constexpr size_t kBlockAlignment = 64;
// Requests up to this size come from the small pool (2 MiB segments).
inline constexpr size_t kSmallRequestLimit = size_t{1} << 20;
inline constexpr size_t kSegmentGranularity = size_t{2} << 20;

// What a block holds: transient data (activations, ordinary tensors) or a
// resident frame (packed weights, pinned in the pool).
enum class MemoryKind : uint8_t { Transient = 0, Resident = 1 };
inline constexpr size_t kNumMemoryKinds = 2;

// Same meaning as c10::CachingAllocator::Stat.
struct Stat {
  int64_t current = 0, peak = 0, allocated = 0, freed = 0;
  void increase(int64_t n) {
    current += n;
    peak = std::max(peak, current);
    allocated += n;
  }
  void decrease(int64_t n) {
    current -= n;
    freed += n;
  }
  void reset_peak() { peak = current; }
  void reset_accumulated() { allocated = freed = 0; }
};

// Indexed like c10's StatType: 0 all, 1 small pool, 2 large pool.
enum PoolIndex : size_t { kAll = 0, kSmallPool = 1, kLargePool = 2 };
using StatArray = std::array<Stat, 3>;

struct PoolStats {
  StatArray allocation, segment, active, inactive_split;
  StatArray allocated_bytes, reserved_bytes, active_bytes,
      inactive_split_bytes, requested_bytes;
  std::array<Stat, kNumMemoryKinds> bytes_by_kind;  // allocated bytes
  int64_t num_alloc_retries = 0, num_ooms = 0;
  int64_t num_device_alloc = 0, num_device_free = 0;  // segment (un)reserves
};

// Thrown when a request cannot be met even after releasing the cache.
class OutOfMemory : public std::runtime_error {
 public:
  OutOfMemory(const std::string& what, size_t requested)
      : std::runtime_error(what), requested(requested) {}
  size_t requested;
};

// A block or segment of FabricPool::snapshot(); offsets from the pool's base.
struct BlockInfo {
  size_t offset = 0, size = 0;
  size_t requested = 0;  // bytes asked for (allocated blocks)
  bool allocated = false;
  MemoryKind kind = MemoryKind::Transient;
};
struct SegmentInfo {
  size_t offset = 0, size = 0;
  PoolIndex pool = kSmallPool;
  std::vector<BlockInfo> blocks;  // address order, covering the segment
};

class FabricPool {
 public:
  // `name` appears in error messages (e.g. "tfmbs:0"). No memory is touched
  // or reserved until the first allocation.
  FabricPool(std::string name, size_t capacity);
  ~FabricPool();
  FabricPool(const FabricPool&) = delete;
  FabricPool& operator=(const FabricPool&) = delete;

  // Returns a 64-byte aligned pointer inside the pool; nullptr for 0 bytes.
  // Throws OutOfMemory (message names the pool, the request, capacity,
  // allocated and cached bytes) after releasing the cache and retrying.
  void* allocate(size_t bytes, MemoryKind kind = MemoryKind::Transient);
  // Frees a pointer returned by allocate(); nullptr is ignored; a pointer
  // this pool did not hand out throws std::invalid_argument.
  void free(void* ptr);
  // Returns fully free cached segments to the pool (and their pages to
  // the OS). Returns the bytes released.
  size_t release_cache();

  // Pressure callbacks (as CUDA's FreeMemoryCallbacksRegistry): when an
  // allocation finds no room, before it gives up, they are asked in the
  // order they were added, with the bytes still needed; each may free
  // blocks of this pool (e.g. evict unpinned frames) and returns how many
  // bytes it freed. They run without the pool's lock, one at a time; a
  // callback must not allocate from this pool.
  using PressureCallback = std::function<size_t(size_t needed)>;
  using CallbackId = uint64_t;
  CallbackId add_pressure_callback(PressureCallback callback);
  // After this returns the callback is not running and never runs again.
  void remove_pressure_callback(CallbackId id);

  bool contains(const void* ptr) const;
  // Bytes of the block that starts at `ptr` (its rounded size); 0 if none.
  size_t block_size(const void* ptr) const;
  const std::string& name() const { return name_; }
  size_t capacity() const { return capacity_; }
  // Start of the pool's address range (reserved on first call); offsets
  // of the TFD base_addr are relative to it.
  uint8_t* base();
  bool reserved() const;

  PoolStats stats() const;
  // The reserved segments and their blocks, in address order.
  std::vector<SegmentInfo> snapshot() const;
  // Keeps the newest `max_entries` allocation events from now on; 0 stops
  // and forgets them. `context`, if given, is asked (outside the pool's
  // lock, by allocate() with Alloc and free() with Free) what to record as
  // the context of the events that call causes.
  using ContextProvider = std::shared_ptr<const void> (*)(PoolEvent event);
  void record_history(size_t max_entries, ContextProvider context = nullptr);
  std::vector<PoolTraceEntry> history() const;
  void reset_peak_stats();
  void reset_accumulated_stats();

 private:
  struct Impl;
  std::string name_;
  size_t capacity_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tfmbs::fabric
