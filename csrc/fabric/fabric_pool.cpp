#include "fabric/fabric_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

namespace tfmbs::fabric {

namespace {

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, unit == 0 ? "%.0f %s" : "%.2f %s", value,
                units[unit]);
  return buffer;
}

// Free address ranges of the pool, best fit, coalesced on release. Segments
// are carved from here.
class RangeAllocator {
 public:
  explicit RangeAllocator(size_t capacity) { insert(0, capacity); }

  // Returns the offset of `size` free bytes, or npos.
  size_t allocate(size_t size) {
    auto it = by_size_.lower_bound({size, 0});
    if (it == by_size_.end()) return npos;
    auto [range_size, offset] = *it;
    erase(offset, range_size);
    if (range_size > size) insert(offset + size, range_size - size);
    return offset;
  }

  void release(size_t offset, size_t size) {
    auto next = by_offset_.lower_bound(offset);
    if (next != by_offset_.end() && offset + size == next->first) {
      size += next->second;
      erase(next->first, next->second);
    }
    auto prev = by_offset_.lower_bound(offset);
    if (prev != by_offset_.begin()) {
      --prev;
      if (prev->first + prev->second == offset) {
        offset = prev->first;
        size += prev->second;
        erase(prev->first, prev->second);
      }
    }
    insert(offset, size);
  }

  static constexpr size_t npos = SIZE_MAX;

 private:
  void insert(size_t offset, size_t size) {
    by_offset_.emplace(offset, size);
    by_size_.emplace(size, offset);
  }
  void erase(size_t offset, size_t size) {
    by_offset_.erase(offset);
    by_size_.erase({size, offset});
  }

  std::map<size_t, size_t> by_offset_;
  std::set<std::pair<size_t, size_t>> by_size_;
};

struct Segment;

// A block is a piece of a segment; the blocks of a segment form an address
// ordered list so a freed block can merge with free neighbours.
struct Block {
  size_t offset = 0;  // from the pool base
  size_t size = 0;
  size_t requested = 0;
  bool allocated = false;
  MemoryKind kind = MemoryKind::Transient;
  Segment* segment = nullptr;
  Block* prev = nullptr;
  Block* next = nullptr;
};

struct Segment {
  size_t offset = 0;
  size_t size = 0;
  PoolIndex pool = kSmallPool;
  Block* first = nullptr;
};

// Free blocks ordered by (size, offset): lower_bound gives the best fit, the
// lowest address among equals.
struct BlockOrder {
  bool operator()(const Block* a, const Block* b) const {
    return a->size != b->size ? a->size < b->size : a->offset < b->offset;
  }
};

}  // namespace

struct FabricPool::Impl {
  explicit Impl(size_t capacity) : ranges(capacity) { live.reserve(4096); }

  mutable std::mutex mutex;
  // Set once (under the mutex) when the range is reserved; read without the
  // lock on the hot paths (contains(), every allocation).
  std::atomic<uint8_t*> base{nullptr};
  RangeAllocator ranges;
  std::set<Block*, BlockOrder> free_blocks[3];  // indexed by PoolIndex
  std::unordered_map<size_t, Block*> live;      // offset -> allocated block
  std::set<Segment*> segments;
  PoolStats stats;
  PoolHistory history;
  // record_history's provider while the history records, else null.
  std::atomic<FabricPool::ContextProvider> history_context{nullptr};

  std::shared_ptr<const void> gather_context(PoolEvent event) const {
    const FabricPool::ContextProvider provider = history_context.load(std::memory_order_acquire);
    return provider ? provider(event) : nullptr;
  }
  // Held while callbacks run (not the pool's lock: they free blocks), so
  // that removing one waits for a call in progress.
  std::mutex callbacks_mutex;
  std::vector<std::pair<CallbackId, PressureCallback>> callbacks;
  CallbackId next_callback = 1;

  // Asks the callbacks in turn until `needed` bytes are freed.
  size_t relieve(size_t needed) {
    std::lock_guard<std::mutex> lock(callbacks_mutex);
    size_t freed = 0;
    for (auto& [id, callback] : callbacks) {
      if (freed >= needed) break;
      freed += callback(needed - freed);
    }
    return freed;
  }

  void update(StatArray& stat, PoolIndex pool, int64_t delta) {
    for (size_t i : {size_t{kAll}, size_t{pool}}) {
      if (delta >= 0) {
        stat[i].increase(delta);
      } else {
        stat[i].decrease(-delta);
      }
    }
  }

  // Smallest free cached block of `pool` that holds `size` bytes.
  Block* find_cached(PoolIndex pool, size_t size) {
    Block key;
    key.size = size;
    auto it = free_blocks[pool].lower_bound(&key);
    if (it == free_blocks[pool].end()) return nullptr;
    Block* block = *it;
    free_blocks[pool].erase(it);
    if (block->prev || block->next) {  // it was an inactive split
      update(stats.inactive_split, pool, -1);
      update(stats.inactive_split_bytes, pool, -static_cast<int64_t>(block->size));
    }
    return block;
  }

  // Reserves a new segment from the pool's free ranges, or nullptr.
  Block* reserve_segment(PoolIndex pool, size_t size) {
    size_t segment_size = pool == kSmallPool
                              ? kSegmentGranularity
                              : round_up(size, kSegmentGranularity);
    size_t offset = ranges.allocate(segment_size);
    if (offset == RangeAllocator::npos) return nullptr;
    auto* segment = new Segment{offset, segment_size, pool, nullptr};
    auto* block = new Block;
    block->offset = offset;
    block->size = segment_size;
    block->segment = segment;
    segment->first = block;
    segments.insert(segment);
    update(stats.segment, pool, 1);
    update(stats.reserved_bytes, pool, static_cast<int64_t>(segment_size));
    ++stats.num_device_alloc;
    history.record(PoolEvent::SegmentAlloc, offset, segment_size);
    return block;
  }

  // Splits off the tail of `block` beyond `size` when it is worth keeping
  // (as CUDA does: small blocks always, large ones only past 1 MiB).
  void maybe_split(Block* block, PoolIndex pool, size_t size) {
    size_t remaining = block->size - size;
    bool worth = pool == kSmallPool ? remaining >= kBlockAlignment
                                    : remaining > kSmallRequestLimit;
    if (!worth) return;
    auto* rest = new Block;
    rest->offset = block->offset + size;
    rest->size = remaining;
    rest->segment = block->segment;
    rest->prev = block;
    rest->next = block->next;
    if (block->next) block->next->prev = rest;
    block->next = rest;
    block->size = size;
    free_blocks[pool].insert(rest);
    update(stats.inactive_split, pool, 1);
    update(stats.inactive_split_bytes, pool, static_cast<int64_t>(remaining));
  }

  // Merges free neighbour `other` into `block` (other is removed).
  void absorb(Block* block, Block* other, PoolIndex pool) {
    free_blocks[pool].erase(other);
    update(stats.inactive_split, pool, -1);
    update(stats.inactive_split_bytes, pool, -static_cast<int64_t>(other->size));
    if (other == block->next) {
      block->size += other->size;
      block->next = other->next;
      if (other->next) other->next->prev = block;
    } else {  // other == block->prev
      block->offset = other->offset;
      block->size += other->size;
      block->prev = other->prev;
      if (other->prev) other->prev->next = block;
      block->segment->first =
          block->segment->first == other ? block : block->segment->first;
    }
    delete other;
  }

  void release_block(Block* block) {
    PoolIndex pool = block->segment->pool;
    block->allocated = false;
    if (block->prev && !block->prev->allocated) absorb(block, block->prev, pool);
    if (block->next && !block->next->allocated) absorb(block, block->next, pool);
    free_blocks[pool].insert(block);
    if (block->prev || block->next) {
      update(stats.inactive_split, pool, 1);
      update(stats.inactive_split_bytes, pool, static_cast<int64_t>(block->size));
    }
  }

  size_t release_free_segments() {
    size_t released = 0;
    for (auto it = segments.begin(); it != segments.end();) {
      Segment* segment = *it;
      Block* block = segment->first;
      if (block->allocated || block->next) {
        ++it;
        continue;
      }
      free_blocks[segment->pool].erase(block);
      // Give the pages back: an emptied cache costs no resident memory.
      madvise(base + segment->offset, segment->size, MADV_DONTNEED);
      ranges.release(segment->offset, segment->size);
      update(stats.segment, segment->pool, -1);
      update(stats.reserved_bytes, segment->pool,
             -static_cast<int64_t>(segment->size));
      ++stats.num_device_free;
      history.record(PoolEvent::SegmentFree, segment->offset, segment->size);
      released += segment->size;
      delete block;
      delete segment;
      it = segments.erase(it);
    }
    return released;
  }

  // Marks a found block allocated and counts it; returns its offset.
  size_t activate(Block* block, size_t requested, MemoryKind kind) {
    PoolIndex pool = block->segment->pool;
    block->allocated = true;
    block->requested = requested;
    block->kind = kind;
    live.emplace(block->offset, block);
    count_allocation(block, pool, +1);
    history.record(PoolEvent::Alloc, block->offset, block->size);
    return block->offset;
  }

  // Counts a block becoming allocated (+1) or freed (-1).
  void count_allocation(const Block* block, PoolIndex pool, int sign) {
    int64_t size = sign * static_cast<int64_t>(block->size);
    update(stats.allocation, pool, sign);
    update(stats.active, pool, sign);
    update(stats.allocated_bytes, pool, size);
    update(stats.active_bytes, pool, size);
    update(stats.requested_bytes, pool, sign * static_cast<int64_t>(block->requested));
    Stat& by_kind = stats.bytes_by_kind[static_cast<size_t>(block->kind)];
    sign > 0 ? by_kind.increase(size) : by_kind.decrease(-size);
  }

  template <typename Fn>
  void for_each_stat(Fn fn) {
    for (StatArray* array :
         {&stats.allocation, &stats.segment, &stats.active, &stats.inactive_split,
          &stats.allocated_bytes, &stats.reserved_bytes, &stats.active_bytes,
          &stats.inactive_split_bytes, &stats.requested_bytes}) {
      for (Stat& stat : *array) fn(stat);
    }
    for (Stat& stat : stats.bytes_by_kind) fn(stat);
  }

  // One attempt at finding a block; nullptr if the pool has no room.
  Block* try_allocate(PoolIndex pool, size_t size) {
    Block* block = find_cached(pool, size);
    if (!block) block = reserve_segment(pool, size);
    if (!block) return nullptr;
    maybe_split(block, pool, size);
    return block;
  }
};

FabricPool::FabricPool(std::string name, size_t capacity)
    : name_(std::move(name)),
      capacity_(round_up(std::max<size_t>(capacity, 1), kSegmentGranularity)),
      impl_(std::make_unique<Impl>(capacity_)) {}

FabricPool::~FabricPool() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (Segment* segment : impl_->segments) {
    for (Block* block = segment->first; block;) {
      Block* next = block->next;
      delete block;
      block = next;
    }
    delete segment;
  }
  if (uint8_t* base = impl_->base.load()) munmap(base, capacity_);
}

uint8_t* FabricPool::base() {
  if (uint8_t* base = impl_->base.load(std::memory_order_acquire)) return base;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (!impl_->base.load()) {
    // Address space only: NORESERVE pages cost nothing until touched.
    void* p = mmap(nullptr, capacity_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      throw std::runtime_error("tfmbs: cannot reserve the fabric pool of " + name_ + " (" +
                               format_bytes(capacity_) +
                               "): the host refused the address range; lower TFMBS_MEMORY");
    }
    impl_->base.store(static_cast<uint8_t*>(p), std::memory_order_release);
  }
  return impl_->base.load();
}

bool FabricPool::reserved() const { return impl_->base.load() != nullptr; }

void* FabricPool::allocate(size_t bytes, MemoryKind kind) {
  if (bytes == 0) return nullptr;
  uint8_t* pool_base = base();
  size_t size = round_up(bytes, kBlockAlignment);
  PoolIndex pool = bytes <= kSmallRequestLimit ? kSmallPool : kLargePool;
  bool retried = false;
  const std::shared_ptr<const void> context = impl_->gather_context(PoolEvent::Alloc);
  // Each round the pressure handler frees something; blocks it frees may be
  // taken by other threads before this one retries, so go on while it frees
  // anything, up to a bound that guarantees the loop ends.
  for (int round = 0; bytes <= capacity_ && round < 64; ++round) {
    {
      std::lock_guard<std::mutex> lock(impl_->mutex);
      PoolHistory::Context recorded(impl_->history, context);
      Block* block = impl_->try_allocate(pool, size);
      if (!block) {
        // Drop the cache and retry, as CUDA's allocator (counted once):
        // after a handler round too, since what it freed may sit in
        // segments of the other size class.
        if (!retried) ++impl_->stats.num_alloc_retries;
        retried = true;
        impl_->release_free_segments();
        block = impl_->try_allocate(pool, size);
      }
      if (block) return pool_base + impl_->activate(block, bytes, kind);
    }
    // Second fallback: the owners of evictable blocks free some.
    if (impl_->relieve(size) == 0) break;
  }
  std::lock_guard<std::mutex> lock(impl_->mutex);
  ++impl_->stats.num_ooms;
  {
    PoolHistory::Context recorded(impl_->history, context);
    impl_->history.record(PoolEvent::Oom, 0, bytes);
  }
  const auto& st = impl_->stats;
  int64_t allocated = st.allocated_bytes[kAll].current;
  int64_t cached = st.reserved_bytes[kAll].current - allocated;
  const size_t free_bytes = capacity_ - static_cast<size_t>(allocated);
  // Free bytes enough for the request, but in no one piece: say so, as
  // CUDA's message does, since freeing more is then not the only remedy.
  const std::string fragmentation =
      bytes <= capacity_ && free_bytes >= size
          ? " The pool has " + format_bytes(free_bytes) +
                " free, but not in one piece: the request fails for fragmentation"
                " (freeing tensors next to each other, or fewer long-lived small ones, helps)."
          : std::string();
  throw OutOfMemory(
      "tfmbs: out of memory on " + name_ + ": tried to allocate " +
          format_bytes(bytes) + "; capacity " + format_bytes(capacity_) + ", " +
          format_bytes(static_cast<size_t>(allocated)) + " allocated, " +
          format_bytes(static_cast<size_t>(cached)) +
          " cached (reserved but free)." + fragmentation +
          " Free tensors or raise TFMBS_MEMORY.",
      bytes);
}

void FabricPool::free(void* ptr) {
  if (!ptr) return;
  const std::shared_ptr<const void> context = impl_->gather_context(PoolEvent::Free);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  PoolHistory::Context recorded(impl_->history, context);
  auto* p = static_cast<uint8_t*>(ptr);
  uint8_t* base = impl_->base.load();
  auto it = base && p >= base ? impl_->live.find(static_cast<size_t>(p - base))
                              : impl_->live.end();
  if (it == impl_->live.end()) {
    throw std::invalid_argument("tfmbs: free of a pointer that " + name_ +
                                " did not allocate");
  }
  Block* block = it->second;
  impl_->live.erase(it);
  impl_->history.record(PoolEvent::Free, block->offset, block->size);
  impl_->count_allocation(block, block->segment->pool, -1);
  impl_->release_block(block);
}

size_t FabricPool::release_cache() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->base.load() ? impl_->release_free_segments() : 0;
}

FabricPool::CallbackId FabricPool::add_pressure_callback(PressureCallback callback) {
  std::lock_guard<std::mutex> lock(impl_->callbacks_mutex);
  const CallbackId id = impl_->next_callback++;
  impl_->callbacks.emplace_back(id, std::move(callback));
  return id;
}

void FabricPool::remove_pressure_callback(CallbackId id) {
  std::lock_guard<std::mutex> lock(impl_->callbacks_mutex);
  std::erase_if(impl_->callbacks, [id](const auto& entry) { return entry.first == id; });
}

bool FabricPool::contains(const void* ptr) const {
  auto* p = static_cast<const uint8_t*>(ptr);
  uint8_t* base = impl_->base.load(std::memory_order_acquire);
  return base && p >= base && p < base + capacity_;
}

size_t FabricPool::block_size(const void* ptr) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto* p = static_cast<const uint8_t*>(ptr);
  uint8_t* base = impl_->base.load();
  if (!base || p < base) return 0;
  auto it = impl_->live.find(static_cast<size_t>(p - base));
  return it == impl_->live.end() ? 0 : it->second->size;
}

PoolStats FabricPool::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->stats;
}

std::vector<SegmentInfo> FabricPool::snapshot() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<SegmentInfo> out;
  out.reserve(impl_->segments.size());
  for (const Segment* segment : impl_->segments) {
    SegmentInfo info{segment->offset, segment->size, segment->pool, {}};
    for (const Block* block = segment->first; block; block = block->next) {
      info.blocks.push_back({block->offset, block->size, block->allocated ? block->requested : 0,
                             block->allocated, block->kind});
    }
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const SegmentInfo& a, const SegmentInfo& b) { return a.offset < b.offset; });
  return out;
}

void FabricPool::record_history(size_t max_entries, ContextProvider context) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->history.set_capacity(max_entries);
  impl_->history_context.store(max_entries > 0 ? context : nullptr, std::memory_order_release);
}

std::vector<PoolTraceEntry> FabricPool::history() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->history.entries();
}

void FabricPool::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->for_each_stat([](Stat& stat) { stat.reset_peak(); });
}

void FabricPool::reset_accumulated_stats() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->for_each_stat([](Stat& stat) { stat.reset_accumulated(); });
  auto& st = impl_->stats;
  st.num_alloc_retries = st.num_ooms = 0;
  st.num_device_alloc = st.num_device_free = 0;
}

}  // namespace tfmbs::fabric
