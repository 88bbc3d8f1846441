// The AVX2 twin of fp32_banks_scalar (lane_kernels.cpp): the 16 banks in
// two registers, selecting instead of branching; the same additions in the
// same order, so the same results.
#include <immintrin.h>

#include "fabric/lane_kernels.h"

namespace tfmbs::fabric::lane_detail {
namespace {

// 8 banks, 8 steps: w8's low 8 bytes are the weights.
inline __m256 step(__m256 bank, __m128i w8, const float* xp) {
  const __m256i wi = _mm256_cvtepi8_epi32(w8);
  const __m256 xv = _mm256_loadu_ps(xp);
  const __m256 pos = _mm256_castsi256_ps(_mm256_cmpgt_epi32(wi, _mm256_setzero_si256()));
  const __m256 wz = _mm256_castsi256_ps(_mm256_cmpeq_epi32(wi, _mm256_setzero_si256()));
  const __m256 xz = _mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_EQ_OQ);  // NaN is not a zero
  const __m256 add = _mm256_blendv_ps(_mm256_xor_ps(xv, _mm256_set1_ps(-0.0f)), xv, pos);  // w>0 ? x : -x
  return _mm256_blendv_ps(_mm256_add_ps(bank, add), bank, _mm256_or_ps(wz, xz));
}

}  // namespace

void fp32_banks_avx2(const int8_t* w, const float* x, int64_t k, float* bank) {
  __m256 b0 = _mm256_loadu_ps(bank), b1 = _mm256_loadu_ps(bank + 8);
  int64_t d = 0;
  for (; d + 16 <= k; d += 16) {
    const __m128i w16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + d));
    b0 = step(b0, w16, x + d);
    b1 = step(b1, _mm_srli_si128(w16, 8), x + d + 8);
  }
  _mm256_storeu_ps(bank, b0);
  _mm256_storeu_ps(bank + 8, b1);
  // the tail starts at a multiple of 16: bank index = d % 16 as before
  fp32_banks_scalar(w + d, x + d, k - d, bank);
}

}  // namespace tfmbs::fabric::lane_detail
