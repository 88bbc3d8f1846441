// Local attention's softmax loop (attention_kernels.h): every SIMD level
// against the scalar version bit for bit, and the scalar version against
// std::exp and hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "avx2_twin_levels.h"
#include "fabric/attention_kernels.h"
#include "fabric/cpu_features.h"

namespace tfmbs::fabric {
namespace {

std::vector<float> random_floats(std::mt19937& rng, int64_t n, float stddev) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(AttentionKernels, ScalarExpIsWithinTwoUlpOfStdExp) {
  const auto& k = attention_kernels(Isa::Scalar);
  for (float x = -86.9f; x <= 0.0f; x += 0.0137f) {
    float y = x;
    k.exp_sum(&y, 1, 0.0f);
    const float want = std::exp(x);
    EXPECT_LE(std::fabs(y - want), 2.0f * (std::nextafter(want, 1e30f) - want)) << "x=" << x;
  }
}

TEST(AttentionKernels, ScalarMatchesHandComputedValues) {
  const auto& k = attention_kernels(Isa::Scalar);
  const float inf = std::numeric_limits<float>::infinity();
  // exp(0) = 1 exactly; -inf and anything below -87 give exactly 0.
  std::vector<float> x = {3.0f, 3.0f, -inf, -90.0f + 3.0f, 3.0f};
  EXPECT_EQ(k.exp_sum(x.data(), 5, 3.0f), 3.0f);
  EXPECT_EQ(x, (std::vector<float>{1.0f, 1.0f, 0.0f, 0.0f, 1.0f}));
  float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(k.exp_sum(&nan, 1, 0.0f)));
  EXPECT_EQ(k.exp_sum(x.data(), 0, 0.0f), 0.0f);
}

TEST(AttentionKernels, EveryLevelGivesTheScalarBits) {
  std::mt19937 rng(7);
  const auto& scalar = attention_kernels(Isa::Scalar);
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 64, 67, 128, 257}) {
    std::vector<float> x0 = random_floats(rng, n, 20.0f);
    if (n > 3) x0[3] = -std::numeric_limits<float>::infinity();
    if (n > 5) x0[5] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> want = x0;
    const float want_sum = scalar.exp_sum(want.data(), n, 1.5f);
    for (Isa isa : avx2_twin_levels()) {
      std::vector<float> x = x0;
      const float sum = attention_kernels(isa).exp_sum(x.data(), n, 1.5f);
      EXPECT_TRUE(same_bits(sum, want_sum)) << isa_name(isa) << " n=" << n;
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_TRUE(same_bits(x[i], want[i])) << isa_name(isa) << " n=" << n << " i=" << i;
      }
    }
  }
}

TEST(AttentionKernels, SumIsCloseToTheExactSum) {
  std::mt19937 rng(3);
  std::vector<float> x = random_floats(rng, 1000, 3.0f);
  double exact = 0.0;
  for (float v : x) exact += std::exp(double(v) - 10.0);
  EXPECT_NEAR(best_attention_kernels().exp_sum(x.data(), 1000, 10.0f), exact, 1e-6 * exact);
}

}  // namespace
}  // namespace tfmbs::fabric
