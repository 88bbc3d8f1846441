// The host twins of the lanes (lane_kernels.h, activation_quant.h): every
// SIMD level against the scalar version, hand-computed values, and the lane
// arithmetic against the reference engine that defines it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "avx2_twin_levels.h"
#include "fabric/activation_quant.h"
#include "fabric/cpu_features.h"
#include "fabric/lane_kernels.h"
#include "fabric/lane_major_frame.h"
#include "fabric/reference_engine.h"

namespace tfmbs::fabric {
namespace {

std::vector<float> activations(std::mt19937& rng, int64_t k) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(k));
  for (float& v : x) v = normal(rng);
  // Specials at random places: zeros, NaN, infinities, exact ties of the
  // rounding (x * 127 / a = n + 0.5).
  for (int64_t i = 0; i < k; i += 7) {
    switch ((i / 7) % 5) {
      case 0: x[i] = 0.0f; break;
      case 1: x[i] = std::numeric_limits<float>::quiet_NaN(); break;
      case 2: x[i] = -0.0f; break;
      case 3: x[i] = 2.5f / 127.0f; break;
      default: break;
    }
  }
  return x;
}

TEST(ActivationQuant, HandComputedInt8AndTernary) {
  const float x[4] = {1.0f, -0.5f, 0.25f, 0.0f};
  int8_t q[4];
  float factor = 0;
  quantize_row_int8(x, 4, q, &factor);
  // a = 1: 127, -63.5 -> -64 (ties to even), 31.75 -> 32, 0.
  EXPECT_EQ(std::vector<int8_t>(q, q + 4), (std::vector<int8_t>{127, -64, 32, 0}));
  EXPECT_EQ(factor, 1.0f / 127.0f);
  quantize_row_ternary(x, 4, q, &factor);
  EXPECT_EQ(std::vector<int8_t>(q, q + 4), (std::vector<int8_t>{1, -1, 1, 0}));
  EXPECT_EQ(factor, 1.75f / 4.0f);
  const float zeros[3] = {0.0f, 0.0f, 0.0f};
  quantize_row_int8(zeros, 3, q, &factor);  // a is floored at 1e-5
  EXPECT_EQ(factor, 1e-5f / 127.0f);
}

TEST(ActivationQuant, EveryLevelGivesTheScalarBytes) {
  std::mt19937 rng(7);
  for (Isa isa : avx2_twin_levels()) {
    for (int64_t k = 0; k <= 70; ++k) {
      std::vector<float> x = activations(rng, k);
      std::vector<int8_t> want(static_cast<size_t>(k)), got(static_cast<size_t>(k));
      float want_factor = 0, got_factor = 0;
      quant_detail::quantize_row_int8_scalar(x.data(), k, want.data(), &want_factor);
      quant_detail::quantize_row_int8(isa, x.data(), k, got.data(), &got_factor);
      ASSERT_EQ(got, want) << isa_name(isa) << " k=" << k;
      ASSERT_EQ(std::memcmp(&got_factor, &want_factor, sizeof(float)), 0) << isa_name(isa);
    }
  }
}

TEST(LaneKernels, EveryLevelGivesTheScalarBanks) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> trit(-1, 1);
  for (Isa isa : avx2_twin_levels()) {
    for (int64_t k : {0, 1, 15, 16, 17, 33, 100, 257}) {
      std::vector<float> x = activations(rng, k);
      std::vector<int8_t> w(static_cast<size_t>(k));
      for (auto& v : w) v = static_cast<int8_t>(trit(rng));
      float want[16] = {}, got[16] = {};
      lane_detail::fp32_banks_scalar(w.data(), x.data(), k, want);
      lane_detail::fp32_banks(isa, w.data(), x.data(), k, got);
      for (int j = 0; j < 16; ++j) {
        // Bit for bit, except that a NaN's sign is not defined.
        if (std::isnan(want[j]) && std::isnan(got[j])) continue;
        ASSERT_EQ(std::memcmp(&got[j], &want[j], sizeof(float)), 0) << isa_name(isa) << " k=" << k;
      }
    }
  }
}

TEST(LaneKernels, HandComputedInt8WrapsLikeTheAccumulator) {
  const int8_t w[3] = {1, -1, 0};
  const int8_t x[3] = {100, -27, 5};
  EXPECT_EQ(lane_dot_int8(w, x, 3), 127);
  std::vector<int8_t> ones(1 << 20, 1), big(1 << 20, 127);
  // 2^20 * 127 fits; the wrap is exercised by the reference comparison below.
  EXPECT_EQ(lane_dot_int8(ones.data(), big.data(), 1 << 20), 127 << 20);
}

TEST(LaneKernels, EqualTheReferenceEngine) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> trit(-1, 1), byte(-128, 127);
  for (auto [rows, cols] : {std::pair{7, 40}, std::pair{16, 61}, std::pair{3, 300}}) {
    std::vector<int8_t> w(static_cast<size_t>(rows * cols));
    for (auto& v : w) v = static_cast<int8_t>(trit(rng));
    const LaneMajorFrame frame = LaneMajorFrame::from_trits(w.data(), rows, cols, 4, nullptr);
    const int64_t n = 3;
    std::vector<int8_t> xq(static_cast<size_t>(n * cols));
    for (auto& v : xq) v = static_cast<int8_t>(byte(rng));
    std::vector<float> xf = activations(rng, n * cols);
    for (float& v : xf) v = std::isnan(v) ? 1.0f : v;
    std::vector<int32_t> yq(static_cast<size_t>(n * rows));
    std::vector<float> yf(static_cast<size_t>(n * rows));
    reference::tgemm_int8(frame, xq.data(), n, yq.data());
    reference::tgemm_fp32(frame, xf.data(), n, yf.data());
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_EQ(lane_dot_int8(w.data() + r * cols, xq.data() + b * cols, cols), yq[b * rows + r]);
        const float got = lane_dot_fp32(w.data() + r * cols, xf.data() + b * cols, cols);
        EXPECT_EQ(std::memcmp(&got, &yf[b * rows + r], sizeof(float)), 0) << rows << "x" << cols;
      }
    }
  }
}

}  // namespace
}  // namespace tfmbs::fabric
