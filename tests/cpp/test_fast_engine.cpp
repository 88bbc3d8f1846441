#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/fabric_pool.h"
#include "fabric/fast_engine.h"
#include "fabric/fast_engine_kernels.h"
#include "fabric/pt5_codec.h"
#include "fabric/reference_engine.h"
#include "fabric/status.h"
#include "fabric/tgemm.h"
#include "fabric/thread_pool.h"

namespace tfmbs::fabric {
namespace {

ThreadPool& test_pool() {
  static ThreadPool* pool = new ThreadPool(4);  // more threads than cores on purpose
  return *pool;
}

// Weights with the given fraction of zeros.
std::vector<int8_t> random_weights(int64_t rows, int64_t cols, double zero_fraction, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int8_t> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = u(rng) < zero_fraction ? 0 : (rng() & 1 ? 1 : -1);
  return w;
}

std::vector<int8_t> random_int8(int64_t count, double zero_fraction, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int8_t> x(static_cast<size_t>(count));
  for (auto& v : x) {
    if (u(rng) < zero_fraction) { v = 0; continue; }
    do v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128); while (v == 0);
  }
  return x;
}

std::vector<int8_t> random_ternary(int64_t count, double zero_fraction, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int8_t> x(static_cast<size_t>(count));
  for (auto& v : x) v = u(rng) < zero_fraction ? 0 : (rng() & 1 ? 1 : -1);
  return x;
}

std::vector<float> random_float(int64_t count, double zero_fraction, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(static_cast<size_t>(count));
  for (auto& v : x) {
    const double p = u(rng);
    if (p < zero_fraction) v = (rng() & 1) ? 0.0f : -0.0f;
    else v = g(rng) * (p < 0.1 + zero_fraction ? 1e6f : 1.0f);  // magnitudes that make order matter
  }
  return x;
}

struct Shape {
  int64_t rows, cols;
  int tiles;
};

const Shape kShapes[] = {{1, 1, 1},   {7, 13, 1},   {61, 37, 4},  {60, 300, 4},
                         {130, 257, 3}, {75, 511, 4}, {16, 1000, 2}, {300, 64, 4}};
const double kWeightSparsity[] = {0.0, 0.5, 0.95, 1.0};
const double kActZeros[] = {0.0, 0.005, 0.3, 1.0};

#define EXPECT_COUNTERS_EQ(ref, fast) \
  EXPECT_TRUE((ref) == (fast)) << "first difference (reference vs fast): " << (ref).first_difference(fast)

// The fast engine on each ISA the CPU has and each thread count against the
// reference engine: results and every counter, bit for bit.
void expect_int8_matches_reference(const LaneMajorFrame& lm, const FastFrame& ff, const std::vector<int8_t>& x,
                                   int64_t n, std::initializer_list<int> thread_counts) {
  std::vector<int32_t> y_ref(static_cast<size_t>(n * ff.rows()));
  const OpCounters c_ref = reference::tgemm_int8(lm, x.data(), n, y_ref.data());
  using Batch1 = FastEngineOptions::Batch1;
  // Batch 1 on a frame with PT-5 rows: each kernel, and the engine's choice.
  const bool both = n == 1 && ff.pt5_rows() != nullptr;
  for (Isa isa : supported_isas()) {
    for (int threads : thread_counts) {
      for (Batch1 mode : both ? std::vector<Batch1>{Batch1::Codes, Batch1::Pt5, Batch1::Adaptive}
                              : std::vector<Batch1>{Batch1::Adaptive}) {
        SCOPED_TRACE(testing::Message() << "isa=" << isa_name(isa) << " threads=" << threads
                                        << " batch1=" << static_cast<int>(mode));
        FastEngine e(FastEngineOptions{isa, threads, &test_pool(), mode});
        std::vector<int32_t> y(y_ref.size(), 0x5a5a5a5a);
        const OpCounters c = e.tgemm_int8(ff, x.data(), n, y.data());
        ASSERT_EQ(y, y_ref);
        EXPECT_COUNTERS_EQ(c_ref, c);
      }
    }
  }
}

TEST(FastFrame, LayoutMatchesItsDocumentation) {
  // Column b*256 + i*64 + j is byte b*64 + j, bits 2i..2i+1, code w + 1.
  const int64_t K = 600;
  std::vector<int8_t> w(2 * K, 0);
  w[K + 300] = 1;   // row 1, block 1, i = 0, j = 44
  w[K + 511] = -1;  // row 1, block 1, i = 3, j = 63
  w[5] = 1;         // row 0, block 0, i = 0, j = 5
  auto f = FastFrame::from_trits(w.data(), 2, K, 4);
  EXPECT_EQ(f.padded_cols(), 768);
  EXPECT_EQ(f.row_bytes(), 192u);
  EXPECT_EQ(f.blocks_per_row(), 3);
  const uint8_t* r1 = f.row_codes(1);
  EXPECT_EQ(r1[64 + 44], 0x55 - 1 + 2);       // code 2 at bits 0..1, others 1
  EXPECT_EQ(r1[64 + 63], 0x15);              // code 0 at bits 6..7
  EXPECT_EQ(f.row_codes(0)[5], 0x56);
  EXPECT_EQ(f.row_codes(0)[2 * 64 + 63], 0x55);  // padding = zero weights
  EXPECT_EQ(f.row_nonzeros(), (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(f.trit(1, 300), 1);
  EXPECT_EQ(f.trit(1, 511), -1);
  EXPECT_EQ(f.to_trits(), w);
}

TEST(FastFrame, Pt5RowsMatchTheirDocumentation) {
  // Row r, columns 10p + 5h .. +4: byte 2*(r % 32) + h of pair p in row
  // block r / 32, sum_k (w + 1) * 3^k.
  const int64_t M = 40, K = 23;  // 3 pairs (the last half padding), 2 row blocks
  std::vector<int8_t> w(M * K, 0);
  w[33 * K + 15] = 1;   // row 33: block 1, i = 1; pair 1, h = 1, k = 0
  w[33 * K + 19] = -1;  // k = 4
  w[2 * K + 22] = 1;    // row 2: pair 2, h = 0, k = 2
  auto f = FastFrame::from_trits(w.data(), M, K, 1, nullptr, Pt5Rows::Yes);
  ASSERT_NE(f.pt5_rows(), nullptr);
  EXPECT_EQ(f.pt5_pairs(), 3);
  EXPECT_EQ(f.pt5_block_bytes(), 192u);
  const uint8_t* p = f.pt5_rows();
  EXPECT_EQ(p[192 + 64 + 2 * 1 + 1], 121 + 1 - 81);
  EXPECT_EQ(p[128 + 2 * 2], 121 + 9);
  EXPECT_EQ(p[192 + 128 + 2 * 31 + 1], 121);  // pad row 63, pad columns
  size_t zeros = 0;
  for (size_t i = 0; i < 2 * 192; ++i) zeros += p[i] == 121;
  EXPECT_EQ(zeros, 2 * 192 - 2u);
  // Counted with the frame; absent when asked so, and on small frames by default.
  auto none = FastFrame::from_trits(w.data(), M, K, 1, nullptr, Pt5Rows::No);
  EXPECT_EQ(none.pt5_rows(), nullptr);
  EXPECT_EQ(f.bytes(), none.bytes() + 2 * 192);
  EXPECT_EQ(FastFrame::from_trits(w.data(), M, K, 1).pt5_rows(), nullptr);
  // A frame with slot counts has them exactly when the CPU runs their kernel.
  std::vector<int8_t> big(1000 * 30, 1);
  EXPECT_EQ(FastFrame::from_trits(big.data(), 1000, 30, 1).pt5_rows() != nullptr, cpu_supports(Isa::Avx512));
}

TEST(FastFrame, RoundTripsAndLoadsFromLaneMajor) {
  std::mt19937 rng(11);
  for (const Shape& s : kShapes) {
    auto w = random_weights(s.rows, s.cols, 0.3, rng);
    auto f = FastFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
    EXPECT_EQ(f.to_trits(), w);
    auto lm = LaneMajorFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
    auto g = FastFrame::from_lane_major(lm);
    EXPECT_EQ(g.to_trits(), w);
    EXPECT_EQ(g.tiles(), s.tiles);
    EXPECT_EQ(std::memcmp(f.codes(), g.codes(), f.bytes()), 0);
  }
  std::vector<int8_t> bad = {1, 0, 0, -2};
  try {
    FastFrame::from_trits(bad.data(), 2, 2, 1);
    FAIL();
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), Status::ErrPack);
    EXPECT_NE(std::string(e.what()).find("row 1, column 1 is -2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(FastFrame::from_trits(bad.data(), 1, kFastMaxCols + 1, 1), std::invalid_argument);
}

TEST(FastFrame, LivesInThePoolWhenGivenOne) {
  FabricPool pool("test", size_t{64} << 20);
  std::mt19937 rng(2);
  auto w = random_weights(100, 1000, 0.2, rng);
  auto f = FastFrame::from_trits(w.data(), 100, 1000, 4, &pool);
  EXPECT_TRUE(pool.contains(f.codes()));
  EXPECT_EQ(f.to_trits(), w);
}

// A frame moved from is empty (no dangling views into the memory it gave
// away); the frame moved to, and one moved back by assignment, hold it all.
TEST(FastFrame, MovedFromFrameIsEmpty) {
  std::mt19937 rng(4);
  const int64_t M = 2048, K = 300;  // slot table and PT-5 rows at 4 tiles
  auto w = random_weights(M, K, 0.3, rng);
  auto a = FastFrame::from_trits(w.data(), M, K, 4, nullptr, Pt5Rows::Yes);
  ASSERT_GT(a.slots(), 0);
  const size_t bytes = a.bytes();
  FastFrame b(std::move(a));
  EXPECT_EQ(a.rows(), 0);  // NOLINT(bugprone-use-after-move): what is tested
  EXPECT_EQ(a.cols(), 0);
  EXPECT_EQ(a.bytes(), 0u);
  EXPECT_EQ(a.codes(), nullptr);
  EXPECT_EQ(a.slots(), 0);
  EXPECT_EQ(a.slot_column_nonzeros(), nullptr);
  EXPECT_EQ(a.pt5_rows(), nullptr);
  EXPECT_TRUE(a.row_nonzeros().empty());
  EXPECT_EQ(b.bytes(), bytes);
  EXPECT_NE(b.pt5_rows(), nullptr);
  EXPECT_EQ(b.to_trits(), w);
  a = std::move(b);
  EXPECT_EQ(b.bytes(), 0u);
  EXPECT_EQ(b.pt5_rows(), nullptr);
  EXPECT_EQ(a.to_trits(), w);
  std::vector<int8_t> x = random_int8(K, 0.1, rng);
  std::vector<int32_t> y(M), expected(M);
  FastEngine().tgemm_int8(a, x.data(), 1, y.data());
  reference::tgemm_int8(LaneMajorFrame::from_trits(w.data(), M, K, 4), x.data(), 1, expected.data());
  EXPECT_EQ(y, expected);
}

// The slot counts against a count over the trits, with a frame of several
// 255-rows-per-class chunks; and which frames keep them (rows >= 32 slots).
TEST(FastFrame, SlotColumnNonzerosCountEachLaneClassPerChunk) {
  std::mt19937 rng(15);
  const int64_t M = 7700, K = 70;  // 1 tile: 15 classes, chunks of 3825 rows: 3 chunks
  auto w = random_weights(M, K, 0.3, rng);
  auto f = FastFrame::from_trits(w.data(), M, K, 1, nullptr, Pt5Rows::No);
  ASSERT_EQ(f.lane_classes(), 15);
  ASSERT_EQ(f.slots(), 45);
  std::vector<int64_t> expected(static_cast<size_t>(45 * f.padded_cols()), 0);
  for (int64_t r = 0; r < M; ++r) {
    const int64_t slot = (r / 3825) * 15 + r % 15;
    EXPECT_EQ(f.slot_of(r), slot);
    for (int64_t d = 0; d < K; ++d) expected[static_cast<size_t>(d * 45 + slot)] += w[r * K + d] != 0;
  }
  const uint8_t* counts = f.slot_column_nonzeros();
  ASSERT_NE(counts, nullptr);
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(counts[i], expected[i]) << "slot " << i % 45;
  // The table is part of the frame's memory (the pool counts it).
  EXPECT_EQ(f.bytes(), static_cast<size_t>(M) * f.row_bytes() + expected.size());

  // Full counts: every weight nonzero, 255 rows per class in the first
  // chunk (the most a byte holds), 1 in the second.
  const int64_t full_rows = 255 * 15 + 15;
  std::vector<int8_t> ones(static_cast<size_t>(full_rows * 3), -1);
  auto full = FastFrame::from_trits(ones.data(), full_rows, 3, 1);
  ASSERT_EQ(full.slots(), 30);
  for (int64_t slot = 0; slot < 30; ++slot)
    for (int64_t d = 0; d < 3; ++d)
      EXPECT_EQ(full.slot_column_nonzeros()[static_cast<size_t>(d * 30 + slot)], slot < 15 ? 255 : 1);

  auto w2 = random_weights(480, 10, 0.3, rng);
  EXPECT_EQ(FastFrame::from_trits(w2.data(), 480, 10, 1).slots(), 15);  // 480 = 32 * 15
  EXPECT_EQ(FastFrame::from_trits(w2.data(), 479, 10, 1).slots(), 0);
  const auto no_table = FastFrame::from_trits(w2.data(), 479, 10, 1);
  EXPECT_EQ(no_table.slot_column_nonzeros(), nullptr);
  EXPECT_EQ(no_table.bytes(), 479 * no_table.row_bytes());
}

TEST(FastEngine, IsaAndOptions) {
  EXPECT_EQ(FastEngineOptions{}.isa, best_isa());
  EXPECT_EQ(FastEngine().isa(), best_isa());
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx}) {
    if (cpu_supports(isa)) {
      EXPECT_EQ(FastEngine(FastEngineOptions{isa, 1, nullptr}).isa(), isa);
    } else {
      EXPECT_THROW(FastEngine(FastEngineOptions{isa, 1, nullptr}), std::invalid_argument) << isa_name(isa);
    }
  }
  EXPECT_THROW(FastEngine(FastEngineOptions{Isa::Scalar, -1, nullptr}), std::invalid_argument);
  FastEngine e(FastEngineOptions{Isa::Scalar, 3, &test_pool()});
  EXPECT_EQ(e.threads(), 3);
  e.set_threads(0);
  EXPECT_EQ(e.threads(), 4);
  EXPECT_THROW(e.set_threads(-2), std::invalid_argument);
  std::vector<int8_t> w(4, 1);
  auto f = FastFrame::from_trits(w.data(), 2, 2, 1);
  int32_t y[2];
  EXPECT_THROW(e.tgemm_int8(f, w.data(), -1, y), std::invalid_argument);
}

// Reference vs fast, bit for bit, results and every counter: each ISA the
// CPU has, 1..4 threads, all shapes, weight sparsities and zero-activation
// densities (few zeros and many take different counting paths).
// Each ISA's activation-row copy against sums and counts done here: every
// tail length around the vector widths, -128, and counts that already hold
// earlier rows.
TEST(FastEngine, ActivationRowCopiesSumAndCountZeros) {
  using fast_detail::ActivationRow;
  using CopyRow = ActivationRow (*)(const int8_t*, int64_t, int8_t*, uint8_t*);
  std::vector<std::pair<Isa, CopyRow>> kernels{{Isa::Scalar, fast_detail::copy_activation_row_scalar}};
  if (cpu_supports(Isa::Avx2)) kernels.push_back({Isa::Avx2, fast_detail::copy_activation_row_avx2});
  if (cpu_supports(Isa::Avx512)) kernels.push_back({Isa::Avx512, fast_detail::copy_activation_row_avx512});
  std::mt19937 rng(41);
  for (int64_t cols : {0, 1, 31, 32, 33, 63, 64, 65, 127, 200, 4097}) {
    for (double zeros : {0.0, 0.1, 1.0}) {
      auto x = random_int8(cols, zeros, rng);
      if (cols > 3) x[2] = -128;
      std::vector<uint8_t> counts0(static_cast<size_t>(cols) + 64);
      for (auto& c : counts0) c = static_cast<uint8_t>(rng() % 200);
      int64_t sum = 0;
      bool has_zero = false;
      std::vector<uint8_t> counts_ref = counts0;
      for (int64_t d = 0; d < cols; ++d) {
        sum += x[static_cast<size_t>(d)];
        has_zero |= x[static_cast<size_t>(d)] == 0;
        counts_ref[static_cast<size_t>(d)] += x[static_cast<size_t>(d)] == 0;
      }
      for (auto [isa, copy_row] : kernels) {
        SCOPED_TRACE(testing::Message() << "isa=" << isa_name(isa) << " cols=" << cols << " zeros=" << zeros);
        std::vector<int8_t> dst(static_cast<size_t>(cols) + 64, 7);
        std::vector<uint8_t> counts = counts0;
        const ActivationRow row = copy_row(x.data(), cols, dst.data(), counts.data());
        EXPECT_EQ(row.sum, static_cast<int32_t>(sum));
        EXPECT_EQ(row.has_zero, has_zero);
        EXPECT_TRUE(std::equal(x.begin(), x.end(), dst.begin()));
        EXPECT_TRUE(std::all_of(dst.begin() + cols, dst.end(), [](int8_t v) { return v == 7; }));  // nothing past cols
        EXPECT_EQ(counts, counts_ref);
      }
    }
  }
}

// Each ISA's slot-count accumulation against sums done here: slot counts
// around the vector widths, columns anywhere in the table, row multipliers
// up to what keeps the u16 sums exact.
TEST(FastEngine, SlotCountSumsMatchPlainSums) {
  using fast_detail::ZeroColumn;
  using AddSlots = void (*)(const uint8_t*, int64_t, const ZeroColumn*, int64_t, uint16_t*);
  std::vector<std::pair<Isa, AddSlots>> kernels{{Isa::Scalar, fast_detail::add_slot_counts_scalar}};
  if (cpu_supports(Isa::Avx2)) kernels.push_back({Isa::Avx2, fast_detail::add_slot_counts_avx2});
  if (cpu_supports(Isa::Avx512)) kernels.push_back({Isa::Avx512, fast_detail::add_slot_counts_avx512});
  std::mt19937 rng(60);
  const int64_t table_cols = 50;
  for (int64_t slots : {1, 15, 16, 17, 60, 64, 65, 130}) {
    std::vector<uint8_t> table(static_cast<size_t>(table_cols * slots));
    for (auto& v : table) v = static_cast<uint8_t>(rng() % 256);
    std::vector<ZeroColumn> columns;
    uint64_t most = 0;
    for (int64_t d = table_cols - 1; d >= 0; d -= 1 + static_cast<int64_t>(rng() % 3)) {
      const uint64_t rows = 1 + rng() % 40;
      if (most + 255 * rows > 60000) break;
      most += 255 * rows;
      columns.push_back({d, rows});
    }
    std::vector<uint16_t> start(static_cast<size_t>(slots));
    for (auto& v : start) v = static_cast<uint16_t>(rng() % 5000);
    std::vector<uint16_t> expect = start;
    for (const ZeroColumn& c : columns)
      for (int64_t s = 0; s < slots; ++s)
        expect[static_cast<size_t>(s)] += static_cast<uint16_t>(c.rows * table[static_cast<size_t>(c.d * slots + s)]);
    for (auto [isa, add] : kernels) {
      SCOPED_TRACE(testing::Message() << "isa=" << isa_name(isa) << " slots=" << slots);
      std::vector<uint16_t> part = start;
      add(table.data(), slots, columns.data(), static_cast<int64_t>(columns.size()), part.data());
      EXPECT_EQ(part, expect);
    }
  }
}

TEST(FastEngine, Int8MatchesReferenceEverywhere) {
  std::mt19937 rng(1234);
  int combo = 0;
  for (const Shape& s : kShapes) {
    for (double ws : kWeightSparsity) {
      auto w = random_weights(s.rows, s.cols, ws, rng);
      auto lm = LaneMajorFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
      auto ff = FastFrame::from_trits(w.data(), s.rows, s.cols, s.tiles, nullptr, Pt5Rows::Yes);
      for (int64_t n : {1, 3, 8, 9}) {
        const double xz = kActZeros[combo++ % 4];
        auto x = random_int8(n * s.cols, xz, rng);
        SCOPED_TRACE(testing::Message() << "M=" << s.rows << " K=" << s.cols << " tiles=" << s.tiles
                                        << " wzero=" << ws << " N=" << n << " xzero=" << xz);
        expect_int8_matches_reference(lm, ff, x, n, {1, 2, 4});
      }
    }
  }
}

// The PT-5 kernel's int16 partial sums at their bounds: every weight +1 (or
// -1) against every activation -128 (or 127), for more than one flush of
// the partial sums, and rows that end inside a row block.
TEST(FastEngine, Int8Batch1Pt5AtTheInt16BoundsMatchesReference) {
  const int64_t M = 70, K = 1003;
  std::vector<int8_t> w(M * K);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t d = 0; d < K; ++d) w[r * K + d] = static_cast<int8_t>(r % 3 == 0 ? 1 : r % 3 == 1 ? -1 : (d % 3) - 1);
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 4);
  auto ff = FastFrame::from_trits(w.data(), M, K, 4, nullptr, Pt5Rows::Yes);
  for (int v : {-128, 127}) {
    SCOPED_TRACE(testing::Message() << "x=" << v);
    expect_int8_matches_reference(lm, ff, std::vector<int8_t>(K, static_cast<int8_t>(v)), 1, {1, 2});
  }
}

// More than 255 batch rows: zero counts no longer fit one u8 vector, so
// the engine counts them in chunks (a separate pass on every ISA).
TEST(FastEngine, Int8LargeBatchMatchesReference) {
  std::mt19937 rng(300);
  const int64_t M = 70, K = 100, N = 300;
  auto w = random_weights(M, K, 0.4, rng);
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 4);
  auto ff = FastFrame::from_trits(w.data(), M, K, 4);
  for (double xz : {0.0005, 0.3}) {
    auto x = random_int8(N * K, xz, rng);
    SCOPED_TRACE(testing::Message() << "xzero=" << xz);
    expect_int8_matches_reference(lm, ff, x, N, {2});
  }
}

TEST(FastEngine, TernaryMatchesReference) {
  std::mt19937 rng(99);
  int combo = 0;
  for (const Shape& s : kShapes) {
    for (double ws : {0.0, 0.5, 1.0}) {
      auto w = random_weights(s.rows, s.cols, ws, rng);
      auto lm = LaneMajorFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
      auto ff = FastFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
      for (int64_t n : {1, 3, 8}) {
        const double xz = kActZeros[combo++ % 4];
        auto x = random_ternary(n * s.cols, xz, rng);
        std::vector<int32_t> y_ref(static_cast<size_t>(n * s.rows));
        OpCounters c_ref = reference::tgemm_ternary(lm, x.data(), n, y_ref.data());
        for (Isa isa : supported_isas()) {
          SCOPED_TRACE(testing::Message() << "M=" << s.rows << " K=" << s.cols << " N=" << n
                                          << " isa=" << isa_name(isa));
          FastEngine e(FastEngineOptions{isa, 2, &test_pool()});
          std::vector<int32_t> y(y_ref.size());
          OpCounters c = e.tgemm_ternary(ff, x.data(), n, y.data());
          ASSERT_EQ(y, y_ref);
          EXPECT_COUNTERS_EQ(c_ref, c);
        }
      }
    }
  }
  std::vector<int8_t> w(4, 1), bad = {1, 3};
  auto ff = FastFrame::from_trits(w.data(), 2, 2, 1);
  int32_t y[2];
  FastEngine e;
  try {
    e.tgemm_ternary(ff, bad.data(), 1, y);
    FAIL();
  } catch (const FabricError& err) {
    EXPECT_EQ(err.status(), Status::ErrPack);
    EXPECT_NE(std::string(err.what()).find("element 1 is 3"), std::string::npos);
  }
}

TEST(FastEngine, Fp32MatchesReferenceBitForBit) {
  std::mt19937 rng(77);
  int combo = 0;
  for (const Shape& s : kShapes) {
    for (double ws : {0.0, 0.5, 0.95}) {
      auto w = random_weights(s.rows, s.cols, ws, rng);
      auto lm = LaneMajorFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
      auto ff = FastFrame::from_trits(w.data(), s.rows, s.cols, s.tiles, nullptr, Pt5Rows::Yes);
      for (int64_t n : {1, 3, 8, 9}) {
        const double xz = kActZeros[combo++ % 4];
        auto x = random_float(n * s.cols, xz, rng);
        std::vector<float> y_ref(static_cast<size_t>(n * s.rows));
        OpCounters c_ref = reference::tgemm_fp32(lm, x.data(), n, y_ref.data());
        for (Isa isa : supported_isas()) {
          for (int threads : {1, 3}) {
            SCOPED_TRACE(testing::Message() << "M=" << s.rows << " K=" << s.cols << " N=" << n << " xzero=" << xz
                                            << " isa=" << isa_name(isa) << " threads=" << threads);
            FastEngine e(FastEngineOptions{isa, threads, &test_pool()});
            std::vector<float> y(y_ref.size(), 12345.0f);
            OpCounters c = e.tgemm_fp32(ff, x.data(), n, y.data());
            ASSERT_EQ(std::memcmp(y.data(), y_ref.data(), y.size() * sizeof(float)), 0);
            EXPECT_COUNTERS_EQ(c_ref, c);
          }
        }
      }
    }
  }
}

// inf and NaN activations take the masked path (0 * inf would be NaN under
// an fma): a zero weight must still skip them, as in the reference. NaN
// payloads are not compared (x86 picks an operand's payload).
TEST(FastEngine, Fp32NonFiniteActivationsSkipZeroWeights) {
  std::mt19937 rng(8);
  const int64_t M = 37, K = 300;
  auto w = random_weights(M, K, 0.5, rng);
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 4);
  auto ff = FastFrame::from_trits(w.data(), M, K, 4);
  for (int64_t n : {1, 5}) {
    auto x = random_float(n * K, 0.1, rng);
    x[3] = INFINITY;
    x[10] = -INFINITY;
    x[20] = NAN;
    std::vector<float> y_ref(static_cast<size_t>(n * M));
    OpCounters c_ref = reference::tgemm_fp32(lm, x.data(), n, y_ref.data());
    int finite_results = 0;
    for (Isa isa : supported_isas()) {
      SCOPED_TRACE(isa_name(isa));
      FastEngine e(FastEngineOptions{isa, 2, &test_pool()});
      std::vector<float> y(y_ref.size());
      OpCounters c = e.tgemm_fp32(ff, x.data(), n, y.data());
      for (size_t i = 0; i < y.size(); ++i) {
        if (std::isnan(y_ref[i])) {
          EXPECT_TRUE(std::isnan(y[i])) << i;
        } else {
          ++finite_results;
          EXPECT_EQ(std::memcmp(&y[i], &y_ref[i], 4), 0) << i << ": " << y[i] << " vs " << y_ref[i];
        }
      }
      EXPECT_COUNTERS_EQ(c_ref, c);
    }
    EXPECT_GT(finite_results, 0);  // some rows have zero weights where x is not finite
  }
}

TEST(FastEngine, LargeGemvAndGemmMatchReference) {
  std::mt19937 rng(4096);
  const int64_t M = 4096, K = 4096;
  auto w = random_weights(M, K, 0.33, rng);
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 4);
  auto ff = FastFrame::from_trits(w.data(), M, K, 4);
  for (int64_t n : {1, 3}) {
    auto x = random_int8(n * K, 0.01, rng);
    std::vector<int32_t> y_ref(static_cast<size_t>(n * M)), y(y_ref.size());
    OpCounters c_ref = reference::tgemm_int8(lm, x.data(), n, y_ref.data());
    FastEngine e;
    OpCounters c = e.tgemm_int8(ff, x.data(), n, y.data());
    ASSERT_EQ(y, y_ref);
    EXPECT_COUNTERS_EQ(c_ref, c);
  }
}

// A frame big enough to be cut into several tasks per thread (each kernel
// call streams its rows with the software prefetch running ahead of, and
// past, its range), with a row count that leaves R=1 tail tiles and a
// partial last pass (2501 = 55 * 45 + 26 rows on 3 tiles): every ISA,
// 1 and 2 threads, a streaming batch (1) and one with a second batch tile
// over cached rows (6), activations with and without zeros.
TEST(FastEngine, MultiTaskFramesMatchReference) {
  std::mt19937 rng(2501);
  const int64_t M = 2501, K = 700;
  auto w = random_weights(M, K, 0.4, rng);
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 3);
  auto ff = FastFrame::from_trits(w.data(), M, K, 3);
  for (int64_t n : {1, 6}) {
    for (double xz : {0.0, 0.02}) {
      auto x = random_int8(n * K, xz, rng);
      SCOPED_TRACE(testing::Message() << "N=" << n << " xzero=" << xz);
      expect_int8_matches_reference(lm, ff, x, n, {1, 2});
    }
  }
}

// RowsDone: each output row reaches the caller's pass exactly once, after
// its values are final for every batch row - on each ISA, with several
// threads, for each activation kind (batch 1 int8 on the PT-5 rows too) and
// from run_tgemm's reference engine.
TEST(FastEngine, RowsDoneSeesEachRowOnceWithItsFinalValues) {
  std::mt19937 rng(77);
  const int64_t M = 2501, K = 700;
  auto w = random_weights(M, K, 0.4, rng);
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 3);
  auto ff = FastFrame::from_trits(w.data(), M, K, 3);
  for (int64_t n : {0, 1, 6}) {
    for (ActivationKind kind : {ActivationKind::Int8, ActivationKind::Ternary, ActivationKind::Fp32}) {
      const bool fp = kind == ActivationKind::Fp32;
      auto xi = kind == ActivationKind::Ternary ? random_ternary(n * K, 0.1, rng) : random_int8(n * K, 0.01, rng);
      auto xf = random_float(n * K, 0.01, rng);
      const void* x = fp ? static_cast<const void*>(xf.data()) : static_cast<const void*>(xi.data());
      std::vector<uint32_t> y_ref(static_cast<size_t>(n * M));
      run_tgemm(nullptr, nullptr, &lm, kind, x, n, y_ref.data());
      std::vector<const FastEngine*> engines{nullptr};
      std::vector<FastEngine> fast;
      fast.reserve(supported_isas().size() * 2);
      for (Isa isa : supported_isas())
        for (int threads : {1, 3}) engines.push_back(&fast.emplace_back(FastEngineOptions{isa, threads, &test_pool()}));
      for (const FastEngine* e : engines) {
        SCOPED_TRACE(testing::Message() << "n=" << n << " kind=" << static_cast<int>(kind)
                                        << " isa=" << (e ? isa_name(e->isa()) : "reference")
                                        << " threads=" << (e ? e->threads() : 0));
        std::vector<uint32_t> y(y_ref.size(), 0x5a5a5a5a), seen(y_ref.size(), 0x5a5a5a5a);
        std::vector<std::atomic<int>> calls(static_cast<size_t>(M));
        const RowsDone done = [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            calls[static_cast<size_t>(r)]++;
            for (int64_t b = 0; b < n; ++b) seen[static_cast<size_t>(b * M + r)] = y[static_cast<size_t>(b * M + r)];
          }
        };
        run_tgemm(e, &ff, &lm, kind, x, n, y.data(), &done);
        EXPECT_TRUE(std::all_of(calls.begin(), calls.end(), [](const std::atomic<int>& c) { return c == 1; }));
        EXPECT_EQ(seen, y_ref);
      }
    }
  }
}

// Frames on both sides of the slot-count rule (FastFrame: rows >= 32
// slots): the zero-skip counters come from the slot counts or from the row
// kernels, for int8, ternary and fp32 activations, every ISA, batches
// below and above 255 rows, few and many zeros. 7700 rows on 1 tile span
// three 255-rows-per-class chunks; 479 rows on 1 tile keep no slot counts;
// 300 x 2300 on 4 tiles has none either and a K past 2048 that is not a
// multiple of 256, where the AVX2 kernel maps its zero slices to columns.
// Slot counts at their largest (255 nonzero rows per class and column)
// summed over more zero columns, and batch rows, than 16 bits hold.
TEST(FastEngine, ZeroSkipCountersFromFullSlotCountsMatchReference) {
  const int64_t M = 255 * 15, K = 260;  // 1 tile: one chunk of full slots
  std::vector<int8_t> w(static_cast<size_t>(M * K));
  for (size_t i = 0; i < w.size(); ++i) w[i] = i % 3 == 0 ? 1 : -1;
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 1);
  auto ff = FastFrame::from_trits(w.data(), M, K, 1);
  ASSERT_EQ(ff.slots(), 15);
  for (int64_t n : {1, 3, 257, 258}) {
    std::vector<int8_t> x(static_cast<size_t>(n * K), 0);
    x[0] = 5;  // one nonzero: column 0 is zero in n - 1 rows
    std::vector<int32_t> y_ref(static_cast<size_t>(n * M)), y(y_ref.size());
    const OpCounters c_ref = reference::tgemm_int8(lm, x.data(), n, y_ref.data());
    for (Isa isa : supported_isas()) {
      SCOPED_TRACE(testing::Message() << "N=" << n << " isa=" << isa_name(isa));
      EXPECT_COUNTERS_EQ(c_ref, FastEngine(FastEngineOptions{isa, 2, &test_pool()}).tgemm_int8(ff, x.data(), n, y.data()));
      ASSERT_EQ(y, y_ref);
    }
  }
}

TEST(FastEngine, ZeroSkipCountersFromSlotCountsAndFromRowsMatchReference) {
  std::mt19937 rng(7700);
  struct Case {
    int64_t rows, cols;
    int tiles;
    int64_t slots;
  };
  for (const Case& s : {Case{7700, 70, 1, 45}, Case{480, 300, 1, 15}, Case{479, 300, 1, 0}, Case{300, 2300, 4, 0}}) {
    auto w = random_weights(s.rows, s.cols, 0.3, rng);
    auto lm = LaneMajorFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
    auto ff = FastFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
    ASSERT_EQ(ff.slots(), s.slots);
    for (int64_t n : {1, 3, 260}) {
      for (double xz : {0.0, 0.01, 0.3, 1.0}) {
        if (n == 260 && s.rows * s.cols > 200000) continue;  // keeps the reference's time small
        auto x8 = random_int8(n * s.cols, xz, rng);
        auto x3 = random_ternary(n * s.cols, xz, rng);
        auto xf = random_float(n * s.cols, xz, rng);
        std::vector<int32_t> y8_ref(static_cast<size_t>(n * s.rows)), y3_ref(y8_ref.size());
        std::vector<float> yf_ref(y8_ref.size());
        const OpCounters c8_ref = reference::tgemm_int8(lm, x8.data(), n, y8_ref.data());
        const OpCounters c3_ref = reference::tgemm_ternary(lm, x3.data(), n, y3_ref.data());
        const OpCounters cf_ref = reference::tgemm_fp32(lm, xf.data(), n, yf_ref.data());
        for (Isa isa : supported_isas()) {
          SCOPED_TRACE(testing::Message() << "M=" << s.rows << " K=" << s.cols << " tiles=" << s.tiles << " N=" << n
                                          << " xzero=" << xz << " isa=" << isa_name(isa));
          FastEngine e(FastEngineOptions{isa, 2, &test_pool()});
          std::vector<int32_t> y(y8_ref.size());
          std::vector<float> yf(y8_ref.size());
          EXPECT_COUNTERS_EQ(c8_ref, e.tgemm_int8(ff, x8.data(), n, y.data()));
          ASSERT_EQ(y, y8_ref);
          EXPECT_COUNTERS_EQ(c3_ref, e.tgemm_ternary(ff, x3.data(), n, y.data()));
          ASSERT_EQ(y, y3_ref);
          EXPECT_COUNTERS_EQ(cf_ref, e.tgemm_fp32(ff, xf.data(), n, yf.data()));
          ASSERT_EQ(std::memcmp(yf.data(), yf_ref.data(), yf.size() * sizeof(float)), 0);
        }
      }
    }
  }
}

TEST(FastEngine, EmptyShapes) {
  std::vector<int8_t> w(5 * 3, 1);
  for (Isa isa : supported_isas()) {
    FastEngine e(FastEngineOptions{isa, 2, &test_pool()});
    auto f = FastFrame::from_trits(w.data(), 5, 3, 4);
    auto lm = LaneMajorFrame::from_trits(w.data(), 5, 3, 4);
    EXPECT_EQ(e.tgemm_int8(f, nullptr, 0, nullptr), reference::tgemm_int8(lm, nullptr, 0, nullptr));
    auto k0 = FastFrame::from_trits(nullptr, 5, 0, 4);
    auto lk0 = LaneMajorFrame::from_trits(nullptr, 5, 0, 4);
    std::vector<int32_t> y(5, 7), y_ref(5, 9);
    EXPECT_EQ(e.tgemm_int8(k0, nullptr, 1, y.data()), reference::tgemm_int8(lk0, nullptr, 1, y_ref.data()));
    EXPECT_EQ(y, y_ref);
    auto m0 = FastFrame::from_trits(nullptr, 0, 7, 4);
    std::vector<int8_t> x(7, 1);
    EXPECT_EQ(e.tgemm_int8(m0, x.data(), 1, nullptr), OpCounters(4));
    // No columns with whole row groups and batch tiles (the AMX kernel's
    // shapes), and with PT-5 rows at batch 1.
    auto wide0 = FastFrame::from_trits(nullptr, 40, 0, 4, nullptr, Pt5Rows::Yes);
    auto lwide0 = LaneMajorFrame::from_trits(nullptr, 40, 0, 4);
    for (int64_t n : {1, 5, 33}) {
      SCOPED_TRACE(testing::Message() << "isa=" << isa_name(isa) << " K=0 N=" << n);
      std::vector<int32_t> y0(static_cast<size_t>(n * 40), 7), y0_ref(y0.size(), 9);
      EXPECT_EQ(e.tgemm_int8(wide0, nullptr, n, y0.data()), reference::tgemm_int8(lwide0, nullptr, n, y0_ref.data()));
      EXPECT_EQ(y0, y0_ref);
    }
  }
}

// The lane accumulators wrap at 32 bits; the fast engine must flag exactly
// the tiles the reference flags (reference test: AccumulatorOverflow...).
// Batch 1 on AVX-512 decodes the codes in place and keeps four group sums
// per row scaled by 4^i; at the largest K it does so for, with the largest
// activations, every one of them is near 2^31 and must come back exact.
TEST(FastEngine, Int8BatchOneAtTheInPlaceBoundIsExact) {
  const int64_t K = 32767 * 256;
  std::vector<int8_t> w(16 * static_cast<size_t>(K), 0);
  for (int64_t d = 0; d < K; ++d) {
    w[d] = 1;                        // row 0
    w[K + d] = -1;                   // row 1
    w[2 * K + d] = d % 2 ? 1 : -1;   // row 2
    w[3 * K + d] = d % 3 == 0 ? 1 : 0;  // row 3
  }
  auto f = FastFrame::from_trits(w.data(), 16, K, 2);
  w.clear();
  w.shrink_to_fit();
  std::vector<int8_t> x(static_cast<size_t>(K), -128);
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(isa_name(isa));
    FastEngine e(FastEngineOptions{isa, 2, &test_pool()});
    std::vector<int32_t> y(16, 0x5a5a5a5a);
    e.tgemm_int8(f, x.data(), 1, y.data());
    EXPECT_EQ(y[0], -128 * K);
    EXPECT_EQ(y[1], 128 * K);
    EXPECT_EQ(y[2], 0);
    EXPECT_EQ(y[3], -128 * ((K + 2) / 3));
    for (int r = 4; r < 16; ++r) EXPECT_EQ(y[r], 0) << r;
  }
}

// The AVX2 kernel sums up to 8 blocks of vpmaddubsw products in int16: at
// most 8 * 8 * 2 * 2 * 128 = 32768 in magnitude, reached only as -32768
// (x = -128, w = +1 everywhere); its fused zero counts sum 64 pairs of
// 2 * 255 (255 batch rows with x = 0, w = +-1 everywhere). K spans several
// such chunks and a partial one; 1, 2 and 3 batch rows take the 1- and 2-row
// tiles. Results and counters against the reference.
TEST(FastEngine, Int8SumsAtTheKernelsInt16BoundsAreExact) {
  const int64_t M = 6, K = 3 * 2048 + 256 + 64;
  std::vector<int8_t> w(static_cast<size_t>(M * K));
  std::mt19937 rng(77);
  for (int64_t d = 0; d < K; ++d) {
    w[d] = 1;
    w[K + d] = -1;
    for (int64_t r = 2; r < M; ++r) w[r * K + d] = rng() & 1 ? 1 : -1;
  }
  auto lm = LaneMajorFrame::from_trits(w.data(), M, K, 2);
  auto ff = FastFrame::from_trits(w.data(), M, K, 2);
  for (int64_t n : {1, 2, 3, 255}) {
    // Extreme activations, then (at 255 rows) all zeros: the largest counts.
    std::vector<int8_t> x(static_cast<size_t>(n * K), n == 255 ? 0 : -128);
    if (n < 255) {
      std::vector<int32_t> y_ref(static_cast<size_t>(n * M));
      reference::tgemm_int8(lm, x.data(), n, y_ref.data());
      EXPECT_EQ(y_ref[0], -128 * K);
    }
    SCOPED_TRACE(testing::Message() << "N=" << n);
    expect_int8_matches_reference(lm, ff, x, n, {2});
  }
}

// Batches of 5 and more rows take the AMX kernel where the CPU has it: 32
// weight rows against one or two blocks of 16 batch rows, 16 rows against
// passes of up to four blocks, the rows left over on AVX-512, fused zero
// counting for frames without slot counts. Every block count and partial
// block, row counts around the groups, with and without slot counts (481
// rows), against the reference, results and counters.
TEST(FastEngine, Int8BatchedTilesMatchReference) {
  std::mt19937 rng(4321);
  const Shape shapes[] = {{33, 300, 1}, {64, 512, 2}, {97, 1000, 4}, {481, 256, 1}};
  int combo = 0;
  for (const Shape& s : shapes) {
    auto w = random_weights(s.rows, s.cols, 0.3, rng);
    auto lm = LaneMajorFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
    auto ff = FastFrame::from_trits(w.data(), s.rows, s.cols, s.tiles);
    for (int64_t n : {5, 16, 17, 32, 33, 48, 64, 65, 100}) {
      const double xz = kActZeros[combo++ % 4];
      auto x = random_int8(n * s.cols, xz, rng);
      SCOPED_TRACE(testing::Message() << "M=" << s.rows << " K=" << s.cols << " N=" << n << " xzero=" << xz);
      expect_int8_matches_reference(lm, ff, x, n, {1, 2});
    }
  }
}

// The kernels' int32 sums of c * x (c = w + 1 in {0, 1, 2}) wrap inside a
// row once 254 * K > 2^31 (here on every ISA, and on the AMX tiles at a
// batch of 5), and the result, sum(c * x) - sum(x), must still be the
// wrapped sum of w * x.
TEST(FastEngine, Int8BatchedSumsWrapExactly) {
  const int64_t M = 32, K = 33027 * 256, n = 5;  // 254 * K > 2^31
  std::vector<int8_t> w(static_cast<size_t>(M * K), 0);
  std::vector<int64_t> count(M, 0);  // nonzero weights per row (all +1 but row 1)
  for (int64_t d = 0; d < K; ++d) {
    w[d] = 1;
    w[K + d] = -1;
    for (int64_t r = 2; r < M; ++r) w[r * K + d] = d % 3 == r % 3 ? 1 : 0;
  }
  for (int64_t r = 0; r < M; ++r)
    for (int64_t d = 0; d < K; ++d) count[r] += w[r * K + d] != 0;
  auto f = FastFrame::from_trits(w.data(), M, K, 1);
  w.clear();
  w.shrink_to_fit();
  const int8_t value[n] = {127, -128, 127, 1, -1};
  std::vector<int8_t> x(static_cast<size_t>(n * K));
  for (int64_t t = 0; t < n; ++t) std::fill(x.begin() + t * K, x.begin() + (t + 1) * K, value[t]);
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(isa_name(isa));
    FastEngine e(FastEngineOptions{isa, 2, &test_pool()});
    std::vector<int32_t> y(static_cast<size_t>(n * M), 0x5a5a5a5a);
    e.tgemm_int8(f, x.data(), n, y.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < M; ++r) {
        const int64_t want = (r == 1 ? -1 : 1) * count[r] * value[t];
        ASSERT_EQ(y[t * M + r], static_cast<int32_t>(static_cast<uint32_t>(want))) << "t=" << t << " r=" << r;
      }
  }
}

TEST(FastEngine, AccumulatorOverflowMatchesReference) {
  const int64_t K = 16909321;  // 127 * K > 2^31 - 1
  std::vector<int8_t> w(16 * static_cast<size_t>(K), 0);
  for (int64_t d = 0; d < K; ++d) {
    w[d] = d + 1 < K ? 1 : 0;  // row 0, tile 0: 127 * (K - 1) fits
    w[15 * K + d] = 1;         // row 15, tile 1: wraps
  }
  auto f = FastFrame::from_trits(w.data(), 16, K, 2);
  w.clear();
  w.shrink_to_fit();
  std::vector<int8_t> x(static_cast<size_t>(K), 127);
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(isa_name(isa));
    FastEngine e(FastEngineOptions{isa, 2, &test_pool()});
    std::vector<int32_t> y(16);
    OpCounters c = e.tgemm_int8(f, x.data(), 1, y.data());
    EXPECT_EQ(y[0], 127 * (K - 1));
    EXPECT_EQ(y[15], static_cast<int32_t>(static_cast<uint32_t>(127u * static_cast<uint32_t>(K))));
    EXPECT_FALSE(c.tiles[0].overflow);
    EXPECT_TRUE(c.tiles[1].overflow);
    EXPECT_EQ(c.utilization, static_cast<uint64_t>(2 * K - 1));
    EXPECT_EQ(c.tiles[0].skips[0], 1u);
  }
}

TEST(FastEngine, ElementwiseMatchesReference) {
  std::mt19937 rng(5);
  FastEngine e;
  for (int tiles : {1, 4}) {
    for (int64_t n : {0, 1, 14, 15, 16, 61, 1000, 4097}) {
      auto a = random_ternary(n, 0.3, rng), b = random_ternary(n, 0.3, rng);
      std::vector<uint8_t> pa(pt5::packed_size(n)), pb(pa.size());
      pt5::encode(a.data(), n, pa.data());
      pt5::encode(b.data(), n, pb.data());
      SCOPED_TRACE(testing::Message() << "n=" << n << " tiles=" << tiles);
      int64_t d_ref = -1, d = -2;
      EXPECT_COUNTERS_EQ(reference::dot(pa.data(), pb.data(), n, tiles, &d_ref),
                         e.dot(pa.data(), pb.data(), n, tiles, &d));
      EXPECT_EQ(d, d_ref);
      std::vector<uint8_t> o_ref(pa.size()), o(pa.size());
      EXPECT_COUNTERS_EQ(reference::add(pa.data(), pb.data(), n, tiles, o_ref.data()),
                         e.add(pa.data(), pb.data(), n, tiles, o.data()));
      EXPECT_EQ(o, o_ref);
      EXPECT_COUNTERS_EQ(reference::mul(pa.data(), pb.data(), n, tiles, o_ref.data()),
                         e.mul(pa.data(), pb.data(), n, tiles, o.data()));
      EXPECT_EQ(o, o_ref);
    }
  }
  std::vector<uint8_t> bad = {250};
  int64_t d;
  EXPECT_THROW(e.dot(bad.data(), bad.data(), 5, 1, &d), FabricError);
}

}  // namespace
}  // namespace tfmbs::fabric
