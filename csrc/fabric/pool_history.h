// What happened in a fabric pool, as torch.cuda.memory._record_memory_history
// keeps it for CUDA: block allocations and frees, segment reservations and
// releases, out-of-memory failures, with their time, in a ring of the newest
// `capacity` events. The pool records under its own lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace tfmbs::fabric {

enum class PoolEvent : uint8_t { Alloc, Free, SegmentAlloc, SegmentFree, Oom };

struct PoolTraceEntry {
  PoolEvent event;
  size_t offset;    // from the pool's base (0 for Oom)
  size_t size;      // the block's or segment's bytes; the request for Oom
  int64_t time_us;  // since the epoch, as CUDA's trace entries
  // Who asked, as the host framework captured it (its stack, say), or null:
  // opaque to the pool.
  std::shared_ptr<const void> context;
};

class PoolHistory {
 public:
  // 0 stops recording and drops what was kept.
  void set_capacity(size_t capacity);
  bool recording() const { return capacity_ > 0; }
  void record(PoolEvent event, size_t offset, size_t size);

  // Entries recorded while a Context lives carry its context.
  class Context {
   public:
    Context(PoolHistory& history, std::shared_ptr<const void> context) : history_(history) {
      history_.context_ = std::move(context);
    }
    ~Context() { history_.context_ = nullptr; }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

   private:
    PoolHistory& history_;
  };
  // Oldest first.
  std::vector<PoolTraceEntry> entries() const;

 private:
  size_t capacity_ = 0;
  size_t next_ = 0;  // where the next entry goes once the ring is full
  std::vector<PoolTraceEntry> ring_;
  std::shared_ptr<const void> context_;
};

}  // namespace tfmbs::fabric
