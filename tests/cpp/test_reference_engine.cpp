#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fabric/pt5_codec.h"
#include "fabric/reference_engine.h"
#include "fabric/status.h"

namespace tfmbs::fabric {
namespace {

std::vector<uint8_t> pack(const std::vector<int8_t>& t) {
  std::vector<uint8_t> out(pt5::packed_size(t.size()));
  pt5::encode(t.data(), t.size(), out.data());
  return out;
}

std::vector<int8_t> unpack(const std::vector<uint8_t>& p, size_t n) {
  std::vector<int8_t> out(n);
  pt5::decode(p.data(), n, out.data());
  return out;
}

TEST(LaneAccumulator, WrapsAndFlagsBothWays) {
  LaneAccumulator a;
  a.add(INT32_MAX);
  EXPECT_FALSE(a.overflow);
  EXPECT_EQ(a.value(), INT32_MAX);
  a.add(1);
  EXPECT_TRUE(a.overflow);
  EXPECT_EQ(a.value(), INT32_MIN);
  LaneAccumulator b;
  b.add(INT32_MIN);
  EXPECT_FALSE(b.overflow);
  b.add(-1);
  EXPECT_TRUE(b.overflow);
  EXPECT_EQ(b.value(), INT32_MAX);
  LaneAccumulator c;  // back inside the range: the flag stays set
  c.add(INT32_MAX);
  c.add(127);
  c.add(-127);
  EXPECT_TRUE(c.overflow);
  EXPECT_EQ(c.value(), INT32_MAX);
}

// The example in telemetry.h, by hand.
TEST(ReferenceEngine, HandComputedGemv) {
  std::vector<int8_t> w = {1, 0, -1, 0, 1, 1};
  auto f = LaneMajorFrame::from_trits(w.data(), 2, 3, 1);
  std::vector<int8_t> x = {5, 0, -2};
  std::vector<int32_t> y(2);
  OpCounters c = reference::tgemm_int8(f, x.data(), 1, y.data());
  EXPECT_EQ(y, (std::vector<int32_t>{7, -2}));
  EXPECT_EQ(c.cycles, 4u);
  EXPECT_EQ(c.compute_cycles, 3u);
  EXPECT_EQ(c.burst_wait_cycles, 1u);
  EXPECT_EQ(c.utilization, 3u);
  ASSERT_EQ(c.tiles.size(), 1u);
  EXPECT_EQ(c.tiles[0].active_cycles[0], 3u);
  EXPECT_EQ(c.tiles[0].active_cycles[1], 3u);
  EXPECT_EQ(c.tiles[0].skips[0], 1u);
  EXPECT_EQ(c.tiles[0].skips[1], 2u);
  for (int l = 2; l < 15; ++l) {
    EXPECT_EQ(c.tiles[0].active_cycles[l], 0u);
    EXPECT_EQ(c.tiles[0].skips[l], 0u);
  }
  EXPECT_FALSE(c.tiles[0].overflow);
}

// Two passes on one tile, a batch of two rows.
TEST(ReferenceEngine, HandComputedPassesAndBatch) {
  const int64_t M = 16, K = 2;
  std::vector<int8_t> w(M * K, 1);
  auto f = LaneMajorFrame::from_trits(w.data(), M, K, 1);
  std::vector<int8_t> x = {1, 2, 0, 3};
  std::vector<int32_t> y(2 * M);
  OpCounters c = reference::tgemm_int8(f, x.data(), 2, y.data());
  for (int64_t r = 0; r < M; ++r) {
    EXPECT_EQ(y[r], 3);
    EXPECT_EQ(y[M + r], 3);
  }
  // P = 2 passes, N = 2, K = 2, burst = ceil(2/8) = 1: 2*2*(2+1).
  EXPECT_EQ(c.cycles, 12u);
  EXPECT_EQ(c.burst_wait_cycles, 4u);
  EXPECT_EQ(c.compute_cycles, 8u);
  // Lane 0 runs row 0 (pass 0) and row 15 (pass 1); lanes 1..14 one row.
  EXPECT_EQ(c.tiles[0].active_cycles[0], 8u);
  EXPECT_EQ(c.tiles[0].skips[0], 2u);  // x[1][0] == 0, once per pass
  for (int l = 1; l < 15; ++l) {
    EXPECT_EQ(c.tiles[0].active_cycles[l], 4u);
    EXPECT_EQ(c.tiles[0].skips[l], 1u);
  }
  EXPECT_EQ(c.utilization, 48u);  // 16 rows x (2 + 1) MACs
  EXPECT_DOUBLE_EQ(c.zero_skip_ratio(), 16.0 / 64.0);
}

TEST(ReferenceEngine, TilesRunInLockStep) {
  // 4 tiles, 61 rows: pass 0 fills all 60 lanes, pass 1 only tile 0 lane 0.
  const int64_t M = 61, K = 5;
  std::vector<int8_t> w(M * K, -1);
  auto f = LaneMajorFrame::from_trits(w.data(), M, K, 4);
  std::vector<int8_t> x = {1, 1, 1, 1, 1};
  std::vector<int32_t> y(M);
  OpCounters c = reference::tgemm_int8(f, x.data(), 1, y.data());
  for (auto v : y) EXPECT_EQ(v, -5);
  EXPECT_EQ(c.cycles, 2u * (5 + 1));
  EXPECT_EQ(c.tiles[0].active_cycles[0], 10u);
  EXPECT_EQ(c.tiles[0].active_cycles[1], 5u);
  EXPECT_EQ(c.tiles[3].active_cycles[14], 5u);
  EXPECT_EQ(c.utilization, 61u * 5);
  EXPECT_EQ(c.total_skips(), 0u);
}

TEST(ReferenceEngine, TernaryActivationsSignFlip) {
  // Row 0: (-1)(1) + (-1)(-1) + skip = 0; row 1: (1)(1) + (1)(-1)... all.
  std::vector<int8_t> w = {-1, -1, 1, 1, 1, 1, 1, -1, 0};
  auto f = LaneMajorFrame::from_trits(w.data(), 3, 3, 1);
  std::vector<int8_t> x = {1, -1, 0};
  std::vector<int32_t> y(3);
  OpCounters c = reference::tgemm_ternary(f, x.data(), 1, y.data());
  EXPECT_EQ(y, (std::vector<int32_t>{0, 0, 2}));
  EXPECT_EQ(c.burst_wait_cycles, 1u);  // ceil(3/5) = 1 PT-5 byte
  EXPECT_EQ(c.utilization, 6u);
  EXPECT_EQ(c.tiles[0].skips[0], 1u);
  EXPECT_EQ(c.tiles[0].skips[2], 1u);
  std::vector<int8_t> bad = {1, 2, 0};
  try {
    reference::tgemm_ternary(f, bad.data(), 1, y.data());
    FAIL();
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), Status::ErrPack);
    EXPECT_NE(std::string(e.what()).find("element 1 is 2"), std::string::npos);
  }
}

TEST(ReferenceEngine, Fp32BanksAndFixedTree) {
  // K = 33: step d goes to bank d % 16. Big and small values show the order.
  const int64_t K = 33;
  std::vector<int8_t> w(K, 1);
  w[5] = -1;
  w[7] = 0;
  auto f = LaneMajorFrame::from_trits(w.data(), 1, K, 1);
  std::vector<float> x(K);
  for (int64_t d = 0; d < K; ++d) x[d] = (d % 3 == 0 ? 1e8f : 1.0f) * (d % 2 ? -1.0f : 1.0f) + 0.25f * d;
  x[9] = 0.0f;
  x[10] = -0.0f;
  float bank[16] = {};
  for (int64_t d = 0; d < K; ++d) {
    if (w[d] == 0 || x[d] == 0.0f) continue;
    if (w[d] > 0) bank[d % 16] += x[d]; else bank[d % 16] -= x[d];
  }
  for (int s = 8; s >= 1; s /= 2)
    for (int j = 0; j < s; ++j) bank[j] += bank[j + s];
  float y = 0;
  OpCounters c = reference::tgemm_fp32(f, x.data(), 1, &y);
  EXPECT_EQ(std::memcmp(&y, &bank[0], 4), 0) << y << " vs " << bank[0];
  EXPECT_EQ(c.burst_wait_cycles, burst_cycles(4 * K));
  EXPECT_EQ(c.tiles[0].skips[0], 3u);  // w[7] = 0, x[9] = 0, x[10] = -0
  EXPECT_EQ(c.utilization, static_cast<uint64_t>(K - 3));
  EXPECT_FALSE(c.tiles[0].overflow);
  // Small integers are exact in any order.
  std::vector<float> xi(K, 2.0f);
  reference::tgemm_fp32(f, xi.data(), 1, &y);
  EXPECT_EQ(y, 2.0f * (K - 1 - 2));
}

TEST(ReferenceEngine, EmptyShapes) {
  std::vector<int8_t> w(5 * 3, 1);
  auto f = LaneMajorFrame::from_trits(w.data(), 5, 3, 4);
  std::vector<int32_t> y;
  OpCounters c = reference::tgemm_int8(f, nullptr, 0, y.data());
  EXPECT_EQ(c, OpCounters(4));
  EXPECT_THROW(reference::tgemm_int8(f, nullptr, -1, y.data()), std::invalid_argument);
  auto k0 = LaneMajorFrame::from_trits(nullptr, 5, 0, 4);
  std::vector<int32_t> y5(5, 99);
  c = reference::tgemm_int8(k0, nullptr, 1, y5.data());
  EXPECT_EQ(y5, std::vector<int32_t>(5, 0));
  EXPECT_EQ(c.cycles, 0u);
}

TEST(ReferenceEngine, AccumulatorOverflowSetsTheTileFlag) {
  // 127 * K just past INT32_MAX on one lane of tile 1; tile 0's lane adds
  // the same values minus the last step and stays in range.
  const int64_t K = 16909321;  // 127 * K = 2147483767 > 2^31 - 1
  // Rows 0 (tile 0, lane 0) and 15 (tile 1, lane 0) of a 16-row frame on 2
  // tiles, built word by word (a 16 x K trit matrix would take 270 MB).
  int8_t lanes_one[15] = {1}, lanes_zero[15] = {};
  uint8_t word_one[4] = {}, word_zero[4] = {};
  pt5::encode(lanes_one, 15, word_one);
  pt5::encode(lanes_zero, 15, word_zero);
  std::vector<uint8_t> bytes(lane_major_bytes(16, K, 2));
  for (int64_t d = 0; d < K; ++d) {
    std::memcpy(&bytes[lane_major_word_offset(0, 0, d, K, 2)], d + 1 < K ? word_one : word_zero, 4);
    std::memcpy(&bytes[lane_major_word_offset(0, 1, d, K, 2)], word_one, 4);
  }
  auto f = LaneMajorFrame::from_bytes(bytes.data(), bytes.size(), 16, K, 2);
  bytes.clear();
  bytes.shrink_to_fit();
  std::vector<int8_t> x(static_cast<size_t>(K), 127);
  std::vector<int32_t> y(16);
  OpCounters c = reference::tgemm_int8(f, x.data(), 1, y.data());
  EXPECT_EQ(y[0], 127 * (K - 1));
  EXPECT_EQ(y[15], static_cast<int32_t>(static_cast<uint32_t>(127u * static_cast<uint32_t>(K))));
  EXPECT_LT(y[15], 0);
  EXPECT_FALSE(c.tiles[0].overflow);
  EXPECT_TRUE(c.tiles[1].overflow);
}

TEST(ReferenceEngine, DotAddMulByHand) {
  // n = 20 on 1 tile: lanes 0..4 get 2 elements, lanes 5..14 one.
  std::vector<int8_t> a(20), b(20);
  for (int i = 0; i < 20; ++i) {
    a[i] = static_cast<int8_t>(i % 3 - 1);       // -1, 0, 1, ...
    b[i] = static_cast<int8_t>((i / 2) % 3 - 1);  // -1,-1, 0, 0, 1, 1, ...
  }
  auto pa = pack(a), pb = pack(b);
  int64_t dot = 0;
  int64_t expect = 0;
  uint64_t macs = 0;
  for (int i = 0; i < 20; ++i) {
    expect += a[i] * b[i];
    macs += a[i] != 0 && b[i] != 0;
  }
  OpCounters c = reference::dot(pa.data(), pb.data(), 20, 1, &dot);
  EXPECT_EQ(dot, expect);
  EXPECT_EQ(c.compute_cycles, 2u);
  EXPECT_EQ(c.burst_wait_cycles, 1u);  // 2 * 4 bytes / 8
  EXPECT_EQ(c.cycles, 3u);
  EXPECT_EQ(c.utilization, macs);
  EXPECT_EQ(c.tiles[0].active_cycles[4], 2u);
  EXPECT_EQ(c.tiles[0].active_cycles[5], 1u);
  // lane 0: elements 0 (a=-1, b=-1: MAC) and 15 (a=-1, b=0: skip).
  EXPECT_EQ(c.tiles[0].skips[0], 1u);
  // lane 1: element 1 (a=0) and 16 (a=0, b=1): 2 skips.
  EXPECT_EQ(c.tiles[0].skips[1], 2u);

  std::vector<uint8_t> out(pa.size());
  reference::mul(pa.data(), pb.data(), 20, 1, out.data());
  auto m = unpack(out, 20);
  reference::add(pa.data(), pb.data(), 20, 1, out.data());
  auto s = unpack(out, 20);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(m[i], a[i] * b[i]) << i;
    EXPECT_EQ(s[i], std::max(-1, std::min(1, a[i] + b[i]))) << i;
  }
  EXPECT_EQ(s[0], -1);  // -1 + -1 saturates
  std::vector<uint8_t> bad = pa;
  bad[1] = 250;
  EXPECT_THROW(reference::dot(bad.data(), pb.data(), 20, 1, &dot), FabricError);
  EXPECT_THROW(reference::dot(pa.data(), pb.data(), -1, 1, &dot), std::invalid_argument);
  EXPECT_THROW(reference::dot(pa.data(), pb.data(), 20, 0, &dot), std::invalid_argument);
}

// The spec requirement: a 1024x1024 GEMV well within a minute (ctest's
// timeout enforces it); the result must equal a plain matrix-vector product.
TEST(ReferenceEngine, Gemv1024MatchesPlainProduct) {
  const int64_t M = 1024, K = 1024;
  std::mt19937 rng(5);
  std::vector<int8_t> w(M * K), x(K);
  for (auto& v : w) v = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
  for (auto& v : x) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  auto f = LaneMajorFrame::from_trits(w.data(), M, K, 4);
  std::vector<int32_t> y(M);
  OpCounters c = reference::tgemm_int8(f, x.data(), 1, y.data());
  uint64_t macs = 0;
  for (int64_t r = 0; r < M; ++r) {
    int32_t s = 0;
    for (int64_t d = 0; d < K; ++d) {
      s += w[r * K + d] * x[d];
      macs += w[r * K + d] != 0 && x[d] != 0;
    }
    ASSERT_EQ(y[r], s) << r;
  }
  EXPECT_EQ(c.utilization, macs);
  EXPECT_EQ(c.compute_cycles, 18u * 1024);  // ceil(1024 / 60) passes
}

}  // namespace
}  // namespace tfmbs::fabric
