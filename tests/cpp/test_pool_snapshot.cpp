// FabricPool::snapshot() and its allocation history (pool_history.h): the
// layout and the events checked against the allocations that made them.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "fabric/fabric_pool.h"

namespace tfmbs::fabric {
namespace {

constexpr size_t MiB = size_t{1} << 20;

size_t offset_of(FabricPool& pool, void* p) {
  return static_cast<size_t>(static_cast<uint8_t*>(p) - pool.base());
}

TEST(PoolSnapshot, ListsSegmentsAndTheirBlocksInAddressOrder) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  EXPECT_TRUE(pool.snapshot().empty());
  void* a = pool.allocate(100);                               // small pool: one 2 MiB segment
  void* b = pool.allocate(1000, MemoryKind::Resident);
  void* big = pool.allocate(3 * MiB);                         // large pool: its own 4 MiB segment
  const std::vector<SegmentInfo> segments = pool.snapshot();
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_LT(segments[0].offset, segments[1].offset);
  size_t small = segments[0].pool == kSmallPool ? 0 : 1;
  const SegmentInfo& s = segments[small];
  EXPECT_EQ(s.size, 2 * MiB);
  ASSERT_EQ(s.blocks.size(), 3u);  // a, b, the free rest
  EXPECT_EQ(s.blocks[0].offset, offset_of(pool, a));
  EXPECT_EQ(s.blocks[0].size, 128u);
  EXPECT_EQ(s.blocks[0].requested, 100u);
  EXPECT_TRUE(s.blocks[0].allocated);
  EXPECT_EQ(s.blocks[1].offset, offset_of(pool, b));
  EXPECT_EQ(s.blocks[1].kind, MemoryKind::Resident);
  EXPECT_FALSE(s.blocks[2].allocated);
  size_t covered = 0;
  for (const BlockInfo& block : s.blocks) covered += block.size;
  EXPECT_EQ(covered, s.size);
  const SegmentInfo& l = segments[1 - small];
  EXPECT_EQ(l.pool, kLargePool);
  EXPECT_EQ(l.size, 4 * MiB);
  EXPECT_EQ(l.blocks.front().offset, offset_of(pool, big));
  pool.free(a);
  pool.free(b);
  pool.free(big);
  pool.release_cache();
  EXPECT_TRUE(pool.snapshot().empty());
}

TEST(PoolSnapshot, HistoryRecordsEventsInOrderOnlyWhileOn) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  pool.free(pool.allocate(64));  // before recording: not kept
  pool.release_cache();
  pool.record_history(100);
  void* a = pool.allocate(200);
  pool.free(a);
  pool.release_cache();
  EXPECT_THROW(pool.allocate(16 * MiB), OutOfMemory);
  const std::vector<PoolTraceEntry> events = pool.history();
  ASSERT_EQ(events.size(), 5u);
  const PoolEvent want[] = {PoolEvent::SegmentAlloc, PoolEvent::Alloc, PoolEvent::Free,
                            PoolEvent::SegmentFree, PoolEvent::Oom};
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].event, want[i]) << i;
  EXPECT_EQ(events[1].offset, events[2].offset);
  EXPECT_EQ(events[1].size, 256u);
  EXPECT_EQ(events[0].size, 2 * MiB);
  EXPECT_EQ(events[4].size, 16 * MiB);
  for (size_t i = 1; i < events.size(); ++i) EXPECT_GE(events[i].time_us, events[i - 1].time_us);
  pool.record_history(0);
  EXPECT_TRUE(pool.history().empty());
  pool.free(pool.allocate(64));
  EXPECT_TRUE(pool.history().empty());
}

TEST(PoolSnapshot, HistoryKeepsTheNewestEntries) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  pool.free(pool.allocate(64));  // the segment stays cached: later events are allocs and frees
  pool.record_history(3);
  for (size_t n : {64, 128, 192, 256}) {
    void* p = pool.allocate(n);
    pool.free(p);
  }
  const std::vector<PoolTraceEntry> events = pool.history();
  ASSERT_EQ(events.size(), 3u);  // of 8: the last free of 192, then the alloc and free of 256
  EXPECT_EQ(events[0].event, PoolEvent::Free);
  EXPECT_EQ(events[0].size, 192u);
  EXPECT_EQ(events[1].event, PoolEvent::Alloc);
  EXPECT_EQ(events[1].size, 256u);
  EXPECT_EQ(events[2].event, PoolEvent::Free);
}

// A provider that says which call it served: a counter per event kind.
int g_allocs = 0, g_frees = 0;
std::shared_ptr<const void> count_call(PoolEvent event) {
  const int n = event == PoolEvent::Alloc ? ++g_allocs : -(++g_frees);
  return std::make_shared<const int>(n);
}
int context_of(const PoolTraceEntry& e) { return e.context ? *static_cast<const int*>(e.context.get()) : 0; }

TEST(PoolSnapshot, EventsCarryTheContextOfTheCallThatCausedThem) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  g_allocs = g_frees = 0;
  pool.record_history(100, &count_call);
  void* a = pool.allocate(200);  // segment + block: both the first allocate's
  pool.free(a);
  pool.release_cache();  // no call of ours asked: no context
  EXPECT_THROW(pool.allocate(16 * MiB), OutOfMemory);
  const std::vector<PoolTraceEntry> events = pool.history();
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(context_of(events[0]), 1);   // SegmentAlloc
  EXPECT_EQ(context_of(events[1]), 1);   // Alloc
  EXPECT_EQ(context_of(events[2]), -1);  // Free
  EXPECT_EQ(context_of(events[3]), 0);   // SegmentFree by release_cache
  EXPECT_EQ(context_of(events[4]), 2);   // Oom
  // Off: the provider is no longer asked.
  pool.record_history(0, &count_call);
  pool.free(pool.allocate(64));
  EXPECT_EQ(g_allocs, 2);
  EXPECT_EQ(g_frees, 1);
}

}  // namespace
}  // namespace tfmbs::fabric
