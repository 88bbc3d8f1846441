// Local attention's inner loops (attention_kernels.h): every SIMD level
// against the scalar version bit for bit, and the scalar version against
// hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "avx2_twin_levels.h"
#include "fabric/attention_kernels.h"
#include "fabric/cpu_features.h"

namespace tfmbs::fabric {
namespace {

std::vector<float> random_floats(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(AttentionKernels, ScalarMatchesHandComputedValues) {
  const auto& k = attention_kernels(Isa::Scalar);
  std::vector<float> a(11), b(11);
  for (int i = 0; i < 11; ++i) a[i] = static_cast<float>(i + 1), b[i] = 0.5f;
  EXPECT_EQ(k.dot(a.data(), b.data(), 11), 33.0f);  // (1 + ... + 11) / 2
  EXPECT_EQ(k.dot(a.data(), b.data(), 0), 0.0f);
  std::vector<float> y(11, 1.0f);
  k.axpy(2.0f, a.data(), y.data(), 11);
  for (int i = 0; i < 11; ++i) EXPECT_EQ(y[i], 1.0f + 2.0f * (i + 1));
}

TEST(AttentionKernels, EveryLevelGivesTheScalarBits) {
  std::mt19937 rng(7);
  const auto& scalar = attention_kernels(Isa::Scalar);
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 64, 67, 128, 257}) {
    const std::vector<float> a = random_floats(rng, n), b = random_floats(rng, n);
    const std::vector<float> y0 = random_floats(rng, n);
    const float want_dot = scalar.dot(a.data(), b.data(), n);
    std::vector<float> want_y = y0;
    scalar.axpy(0.37f, a.data(), want_y.data(), n);
    for (Isa isa : avx2_twin_levels()) {
      const auto& k = attention_kernels(isa);
      EXPECT_TRUE(same_bits(k.dot(a.data(), b.data(), n), want_dot)) << isa_name(isa) << " n=" << n;
      std::vector<float> y = y0;
      k.axpy(0.37f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_TRUE(same_bits(y[i], want_y[i])) << isa_name(isa) << " n=" << n << " i=" << i;
      }
    }
  }
}

TEST(AttentionKernels, DotIsCloseToTheExactSum) {
  std::mt19937 rng(3);
  const std::vector<float> a = random_floats(rng, 1000), b = random_floats(rng, 1000);
  double exact = 0.0, magnitude = 0.0;
  for (int i = 0; i < 1000; ++i) exact += double(a[i]) * b[i], magnitude += std::fabs(double(a[i]) * b[i]);
  EXPECT_NEAR(best_attention_kernels().dot(a.data(), b.data(), 1000), exact, 1e-6 * magnitude);
}

}  // namespace
}  // namespace tfmbs::fabric
