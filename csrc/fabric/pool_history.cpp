#include "fabric/pool_history.h"

#include <algorithm>
#include <chrono>

namespace tfmbs::fabric {

void PoolHistory::set_capacity(size_t capacity) {
  capacity_ = capacity;
  next_ = 0;
  ring_.clear();
  ring_.reserve(std::min<size_t>(capacity, 4096));  // torch asks for sys.maxsize
}

void PoolHistory::record(PoolEvent event, size_t offset, size_t size) {
  if (capacity_ == 0) return;
  const int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const PoolTraceEntry entry{event, offset, size, now, context_};
  if (ring_.size() < capacity_) {
    ring_.push_back(entry);
  } else {
    ring_[next_] = entry;
    next_ = (next_ + 1) % capacity_;
  }
}

std::vector<PoolTraceEntry> PoolHistory::entries() const {
  std::vector<PoolTraceEntry> out(ring_.begin() + static_cast<std::ptrdiff_t>(next_), ring_.end());
  out.insert(out.end(), ring_.begin(), ring_.begin() + static_cast<std::ptrdiff_t>(next_));
  return out;
}

}  // namespace tfmbs::fabric
