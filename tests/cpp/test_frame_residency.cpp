#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fabric/fabric_pool.h"
#include "fabric/frame_residency.h"
#include "fabric/telemetry.h"

namespace tfmbs::fabric {
namespace {

constexpr size_t MiB = size_t{1} << 20;

// A frame of the test: a pool block that eviction frees.
struct TestFrame {
  FabricPool* pool;
  void* block = nullptr;
  FrameResidency::Evict evict(std::vector<std::string>& log, std::string name) {
    return [this, &log, name] {
      log.push_back(name);
      pool->free(block);
      block = nullptr;
    };
  }
};

struct ResidencyTest : ::testing::Test {
  FabricPool pool{"tfmbs:test", 8 * MiB};
  Telemetry telemetry{1};
  FrameResidency residency{pool, telemetry};
  std::vector<std::string> evicted;

  FrameResidency::Id add(TestFrame& f, const char* name, bool pinned = false) {
    f.pool = &pool;
    f.block = pool.allocate(2 * MiB, MemoryKind::Resident);
    return residency.add(2 * MiB, pinned, f.evict(evicted, name));
  }
  HostCounters counters() const { return telemetry.snapshot().host; }
};

TEST_F(ResidencyTest, EvictsLeastRecentlyUsedFirstAndCounts) {
  TestFrame a, b, c;
  const auto ia = add(a, "a");
  const auto ib = add(b, "b");
  add(c, "c");
  residency.use(ia);  // a is now the most recently used
  EXPECT_EQ(residency.evict(2 * MiB), 2 * MiB);
  EXPECT_EQ(evicted, std::vector<std::string>{"b"});
  EXPECT_FALSE(residency.is_resident(ib));
  EXPECT_EQ(residency.evict(3 * MiB), 4 * MiB);  // c, then a
  EXPECT_EQ(evicted, (std::vector<std::string>{"b", "c", "a"}));
  EXPECT_EQ(counters().evictions, 3u);
  EXPECT_EQ(counters().residency_hits, 1u);
  EXPECT_EQ(residency.resident_bytes(), 0u);
}

TEST_F(ResidencyTest, PinnedAndInUseFramesAreNeverEvicted) {
  TestFrame pinned, busy, idle;
  add(pinned, "pinned", /*pinned=*/true);
  const auto ib = add(busy, "busy");
  add(idle, "idle");
  {
    FrameResidency::Use use = residency.use(ib);
    EXPECT_TRUE(use.hit());
    EXPECT_EQ(residency.evict(8 * MiB), 2 * MiB);
    EXPECT_EQ(evicted, std::vector<std::string>{"idle"});
    EXPECT_FALSE(residency.has_evictable());
  }
  EXPECT_TRUE(residency.has_evictable());  // the use ended
  EXPECT_EQ(residency.evict(8 * MiB), 2 * MiB);
  EXPECT_EQ(evicted, (std::vector<std::string>{"idle", "busy"}));
}

TEST_F(ResidencyTest, HoldKeepsAFrameWithoutCountingAUse) {
  TestFrame a;
  const auto ia = add(a, "a");
  {
    FrameResidency::Use held = residency.hold(ia);
    EXPECT_EQ(residency.evict(2 * MiB), 0u);
  }
  EXPECT_EQ(counters().residency_hits + counters().residency_misses, 0u);
  EXPECT_EQ(residency.evict(2 * MiB), 2 * MiB);
}

TEST_F(ResidencyTest, AMissIsCountedAndReloadMakesTheFrameResidentAgain) {
  TestFrame a;
  const auto ia = add(a, "a");
  residency.evict(1);
  {
    FrameResidency::Use use = residency.use(ia);
    EXPECT_FALSE(use.hit());
    a.block = pool.allocate(2 * MiB, MemoryKind::Resident);  // the owner reloads
    residency.set_resident(ia, 2 * MiB);
  }
  EXPECT_TRUE(residency.is_resident(ia));
  EXPECT_TRUE(residency.use(ia).hit());
  EXPECT_EQ(counters().residency_misses, 1u);
  EXPECT_EQ(counters().residency_hits, 1u);
  residency.remove(ia);
  EXPECT_EQ(residency.frames(), 0u);
  EXPECT_THROW(residency.use(ia), std::invalid_argument);
  pool.free(a.block);
}

TEST_F(ResidencyTest, AFullPoolEvictsThroughThePressureCallback) {
  TestFrame a, b, c, d;
  add(a, "a");
  add(b, "b");
  add(c, "c");
  add(d, "d");  // the pool is full
  void* p = pool.allocate(3 * MiB);  // needs two frames' blocks, in one piece
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(evicted, (std::vector<std::string>{"a", "b"}));
  pool.free(p);
}

TEST(FrameResidency, LeavesThePoolWhenDestroyed) {
  FabricPool pool("tfmbs:test", 4 * MiB);
  Telemetry telemetry(1);
  void* block = pool.allocate(4 * MiB, MemoryKind::Resident);
  {
    FrameResidency residency(pool, telemetry);
    residency.add(4 * MiB, false, [&] {
      pool.free(block);
      block = nullptr;
    });
  }
  EXPECT_THROW(pool.allocate(2 * MiB), OutOfMemory);  // nobody left to evict
  EXPECT_NE(block, nullptr);
  pool.free(block);
}

}  // namespace
}  // namespace tfmbs::fabric
