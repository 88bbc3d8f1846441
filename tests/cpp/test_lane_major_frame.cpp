#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <vector>

#include "fabric/fabric_pool.h"
#include "fabric/lane_major_frame.h"
#include "fabric/status.h"

namespace tfmbs::fabric {
namespace {

// The PT-5 byte by its definition (independent of the codec).
uint8_t pt5_byte(const int8_t* t) {
  int v = 0, w = 1;
  for (int i = 0; i < 5; ++i, w *= 3) v += (t[i] + 1) * w;
  return static_cast<uint8_t>(v);
}

std::vector<int8_t> random_trits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
  return v;
}

TEST(LaneMajorFrame, SizesAndPasses) {
  EXPECT_EQ(lane_major_passes(0, 4), 0);
  EXPECT_EQ(lane_major_passes(60, 4), 1);
  EXPECT_EQ(lane_major_passes(61, 4), 2);
  EXPECT_EQ(lane_major_passes(16, 1), 2);
  EXPECT_EQ(lane_major_bytes(61, 7, 4), 4u * 2 * 4 * 7);
  EXPECT_EQ(lane_major_bytes(0, 7, 4), 0u);
  EXPECT_EQ(lane_major_word_offset(1, 2, 3, 7, 4), 4u * ((1 * 4 + 2) * 7 + 3));
  EXPECT_THROW(lane_major_bytes(-1, 7, 4), std::invalid_argument);
  EXPECT_THROW(lane_major_bytes(1, -7, 4), std::invalid_argument);
  EXPECT_THROW(lane_major_bytes(1, 7, 0), std::invalid_argument);
  EXPECT_THROW(lane_major_bytes(1, 7, 256), std::invalid_argument);
}

TEST(LaneMajorFrame, WordsHoldTheLaneTritsOfOneStep) {
  // M = 17 rows on 1 tile: pass 0 = rows 0..14, pass 1 = rows 15, 16.
  const int64_t M = 17, K = 3;
  auto w = random_trits(M * K, 7);
  auto f = LaneMajorFrame::from_trits(w.data(), M, K, 1);
  ASSERT_EQ(f.size(), 4u * 2 * 1 * 3);
  EXPECT_EQ(f.passes(), 2);
  for (int64_t p = 0; p < 2; ++p) {
    for (int64_t d = 0; d < K; ++d) {
      int8_t lanes[15];
      for (int l = 0; l < 15; ++l) {
        const int64_t r = p * 15 + l;
        lanes[l] = r < M ? w[r * K + d] : 0;
      }
      const uint8_t* word = f.word(p, 0, d);
      EXPECT_EQ(word[0], pt5_byte(lanes));
      EXPECT_EQ(word[1], pt5_byte(lanes + 5));
      EXPECT_EQ(word[2], pt5_byte(lanes + 10));
      EXPECT_EQ(word[3], 0) << "pad byte";
    }
  }
  // Rows past M are zero trits: pass 1 lanes 2..14 -> 121 = all zeros.
  EXPECT_EQ(f.word(1, 0, 0)[1], 121);
  EXPECT_EQ(f.word(1, 0, 0)[2], 121);
}

TEST(LaneMajorFrame, TileOwnsFifteenRows) {
  // Tile t of pass 0 holds rows t*15..t*15+14.
  const int64_t M = 45, K = 2;
  std::vector<int8_t> w(M * K, 0);
  w[(31) * K + 1] = 1;  // row 31 = tile 2, lane 1, step 1
  auto f = LaneMajorFrame::from_trits(w.data(), M, K, 4);
  int8_t lanes[15] = {};
  lanes[1] = 1;
  EXPECT_EQ(f.word(0, 2, 1)[0], pt5_byte(lanes));
  EXPECT_EQ(f.word(0, 1, 1)[0], 121);
  EXPECT_EQ(f.word(0, 3, 1)[0], 121);  // tile 3 has no rows (45 < 46)
}

TEST(LaneMajorFrame, RoundTripRandomShapes) {
  uint32_t seed = 1;
  for (int tiles : {1, 3, 4}) {
    for (int64_t M : {0, 1, 14, 15, 16, 59, 60, 61, 130}) {
      for (int64_t K : {0, 1, 4, 5, 16, 33}) {
        auto w = random_trits(static_cast<size_t>(M * K), seed++);
        auto f = LaneMajorFrame::from_trits(w.data(), M, K, tiles);
        EXPECT_EQ(f.size(), lane_major_bytes(M, K, tiles));
        EXPECT_EQ(f.to_trits(), w) << "M=" << M << " K=" << K << " tiles=" << tiles;
        auto g = LaneMajorFrame::from_bytes(f.data(), f.size(), M, K, tiles);
        EXPECT_EQ(g.to_trits(), w);
      }
    }
  }
}

TEST(LaneMajorFrame, RejectsBadTritsAndBytes) {
  std::vector<int8_t> w = {0, 1, -1, 2};
  try {
    LaneMajorFrame::from_trits(w.data(), 2, 2, 1);
    FAIL() << "no throw";
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), Status::ErrPack);
    EXPECT_NE(std::string(e.what()).find("row 1, column 1 is 2"), std::string::npos) << e.what();
  }
  std::vector<int8_t> ok = {0, 1, -1, 1};
  auto f = LaneMajorFrame::from_trits(ok.data(), 2, 2, 1);
  std::vector<uint8_t> bytes(f.data(), f.data() + f.size());
  bytes[5] = 243;
  try {
    LaneMajorFrame::from_bytes(bytes.data(), bytes.size(), 2, 2, 1);
    FAIL() << "no throw";
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), Status::ErrPack);
    EXPECT_NE(std::string(e.what()).find("offset 5 is 243"), std::string::npos) << e.what();
  }
  std::vector<int8_t> out(4);
  EXPECT_THROW(unpack_lane_major(bytes.data(), 2, 2, 1, out.data()), FabricError);
  EXPECT_THROW(LaneMajorFrame::from_bytes(bytes.data(), bytes.size() - 1, 2, 2, 1), std::invalid_argument);
  // A nonzero pad byte is ignored.
  bytes[5] = 121;
  bytes[3] = 0xff;
  EXPECT_EQ(LaneMajorFrame::from_bytes(bytes.data(), bytes.size(), 2, 2, 1).to_trits(),
            (std::vector<int8_t>{0, 1, -1, 1}));
}

TEST(LaneMajorFrame, LivesInThePoolWhenGivenOne) {
  FabricPool pool("test", size_t{64} << 20);
  auto w = random_trits(100 * 40, 3);
  {
    auto f = LaneMajorFrame::from_trits(w.data(), 100, 40, 4, &pool);
    EXPECT_TRUE(pool.contains(f.data()));
    EXPECT_GE(pool.stats().bytes_by_kind[static_cast<size_t>(MemoryKind::Resident)].current,
              static_cast<int64_t>(f.size()));
    EXPECT_EQ(f.to_trits(), w);
  }
  EXPECT_EQ(pool.stats().bytes_by_kind[static_cast<size_t>(MemoryKind::Resident)].current, 0);
}

}  // namespace
}  // namespace tfmbs::fabric
