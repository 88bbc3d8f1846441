// The AVX2 twins of attention_kernels.cpp: one register holds the 8 partial
// sums (lane l sums the products d = l mod 8); the same multiplies and adds
// in the same order, so the same results.
#include <immintrin.h>

#include "fabric/attention_kernels.h"

namespace tfmbs::fabric::attention_detail {

float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d)));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

void axpy_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    _mm256_storeu_ps(y + d, _mm256_add_ps(_mm256_loadu_ps(y + d), _mm256_mul_ps(a, _mm256_loadu_ps(x + d))));
  }
  for (; d < n; ++d) y[d] += alpha * x[d];
}

}  // namespace tfmbs::fabric::attention_detail
