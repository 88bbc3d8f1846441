#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>
#include <vector>

#include "fabric/telemetry.h"

namespace tfmbs::fabric {
namespace {

OpCounters sample(int tiles, uint64_t base) {
  OpCounters c(tiles);
  c.compute_cycles = base;
  c.burst_wait_cycles = 2;
  c.cycles = base + 2;
  c.utilization = base * 3;
  for (int t = 0; t < tiles; ++t)
    for (int l = 0; l < kLanesPerTile; ++l) {
      c.tiles[t].skips[l] = base + t + l;
      c.tiles[t].active_cycles[l] = 10 * base + l;
    }
  return c;
}

TEST(Telemetry, BurstCyclesRoundUpAt8BytesPerCycle) {
  EXPECT_EQ(burst_cycles(0), 0u);
  EXPECT_EQ(burst_cycles(1), 1u);
  EXPECT_EQ(burst_cycles(8), 1u);
  EXPECT_EQ(burst_cycles(9), 2u);
  EXPECT_EQ(burst_cycles(4096), 512u);
}

TEST(Telemetry, AddSumsCountersAndOrsOverflow) {
  OpCounters a = sample(2, 5), b = sample(2, 7);
  b.tiles[1].overflow = true;
  a.add(b);
  EXPECT_EQ(a.cycles, 7u + 9u);
  EXPECT_EQ(a.compute_cycles, 12u);
  EXPECT_EQ(a.burst_wait_cycles, 4u);
  EXPECT_EQ(a.utilization, 36u);
  EXPECT_EQ(a.tiles[1].skips[3], (5u + 1 + 3) + (7u + 1 + 3));
  EXPECT_EQ(a.tiles[0].active_cycles[14], 50u + 14 + 70 + 14);
  EXPECT_FALSE(a.tiles[0].overflow);
  EXPECT_TRUE(a.tiles[1].overflow);
  OpCounters three(3);
  EXPECT_THROW(a.add(three), std::invalid_argument);
}

TEST(Telemetry, LaneSumsAndRatios) {
  OpCounters c(2);
  c.cycles = 10;
  c.utilization = 60;
  c.tiles[0].skips[0] = 3;
  c.tiles[1].skips[0] = 4;
  c.tiles[1].skips[14] = 1;
  c.tiles[0].active_cycles[0] = 10;
  c.tiles[1].active_cycles[0] = 10;
  c.tiles[1].active_cycles[14] = 20;
  EXPECT_EQ(c.lane_skips()[0], 7u);
  EXPECT_EQ(c.lane_skips()[14], 1u);
  EXPECT_EQ(c.total_skips(), 8u);
  EXPECT_EQ(c.total_active_cycles(), 40u);
  EXPECT_DOUBLE_EQ(c.zero_skip_ratio(), 8.0 / 40.0);
  EXPECT_DOUBLE_EQ(c.utilization_ratio(), 60.0 / (10.0 * 2 * 15));
  EXPECT_DOUBLE_EQ(OpCounters(1).zero_skip_ratio(), 0.0);
  EXPECT_DOUBLE_EQ(OpCounters(1).utilization_ratio(), 0.0);
}

TEST(Telemetry, FirstDifferenceNamesTheField) {
  OpCounters a = sample(2, 5), b = sample(2, 5);
  EXPECT_EQ(a.first_difference(b), "");
  b.tiles[1].skips[4] += 1;
  EXPECT_NE(a.first_difference(b).find("tile 1 lane 4 skips"), std::string::npos);
  b = a;
  b.tiles[0].overflow = true;
  EXPECT_NE(a.first_difference(b).find("tile 0 overflow"), std::string::npos);
  EXPECT_NE(a.to_string().find("cycles=7"), std::string::npos);
}

TEST(Telemetry, RecordKeepsLastAndAccumulated) {
  Telemetry t(2);
  t.record(sample(2, 5));
  t.record(sample(2, 7));
  t.add_bytes_h2d(100);
  t.add_bytes_d2h(40);
  t.add_residency_hit();
  t.add_residency_miss();
  t.add_eviction();
  t.add_host_op();
  t.add_fallback_op();
  auto s = t.snapshot();
  EXPECT_EQ(s.last_op, sample(2, 7));
  OpCounters sum = sample(2, 5);
  sum.add(sample(2, 7));
  EXPECT_EQ(s.accumulated, sum);
  EXPECT_EQ(s.host.ops, 2u);
  EXPECT_EQ(s.host.bytes_h2d, 100u);
  EXPECT_EQ(s.host.bytes_d2h, 40u);
  EXPECT_EQ(s.host.residency_hits + s.host.residency_misses + s.host.evictions, 3u);
  EXPECT_EQ(s.host.host_ops + s.host.fallback_ops, 2u);
  EXPECT_THROW(t.record(sample(3, 1)), std::invalid_argument);
  EXPECT_EQ(t.snapshot().host.ops, 2u);  // a rejected record changes nothing
  t.reset();
  s = t.snapshot();
  EXPECT_EQ(s.accumulated, OpCounters(2));
  EXPECT_EQ(s.host, HostCounters{});
}

TEST(Telemetry, ConcurrentRecordsAllCount) {
  Telemetry t(1);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      for (int k = 0; k < 1000; ++k) t.record(sample(1, 1));
    });
  for (auto& th : threads) th.join();
  auto s = t.snapshot();
  EXPECT_EQ(s.host.ops, 4000u);
  EXPECT_EQ(s.accumulated.cycles, 4000u * 3);
}

TEST(Telemetry, RejectsBadTileCount) {
  EXPECT_THROW(Telemetry(0), std::invalid_argument);
  EXPECT_THROW(Telemetry(256), std::invalid_argument);
}

}  // namespace
}  // namespace tfmbs::fabric
