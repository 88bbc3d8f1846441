// The AVX2 twin of attention_kernels.cpp: attention_exp.h's exp on 8 lanes,
// one register holding the 8 partial sums (lane l sums the elements
// j = l mod 8); the same operations in the same order, so the same bits.
#include <immintrin.h>

#include "fabric/attention_exp.h"
#include "fabric/attention_kernels.h"

namespace tfmbs::fabric::attention_detail {
namespace {

__m256 exp_poly8(__m256 x) {
  using C = ExpConstants;
  const __m256 clamped =
      _mm256_min_ps(_mm256_set1_ps(C::kOverflow), _mm256_max_ps(_mm256_set1_ps(-88.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(C::kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_sub_ps(clamped, _mm256_mul_ps(n, _mm256_set1_ps(C::kLn2Hi)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(C::kLn2Lo)));
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(C::kP0);
  for (float c : {C::kP1, C::kP2, C::kP3, C::kP4, C::kP5}) {
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
  }
  p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, r2), r), _mm256_set1_ps(1.0f));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(C::kUnderflow), _CMP_LT_OQ);
  return _mm256_andnot_ps(underflow, result);
}

}  // namespace

float exp_sum_avx2(float* x, int64_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_poly8(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
    _mm256_storeu_ps(x + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; j < n; ++j) sum += x[j] = exp_poly(x[j] - shift);
  return sum;
}

}  // namespace tfmbs::fabric::attention_detail
