// The AVX2 twin of quantize_row_int8_scalar (activation_quant.cpp).
#include <immintrin.h>

#include <cmath>

#include "fabric/activation_quant.h"

namespace tfmbs::fabric::quant_detail {

void quantize_row_int8_avx2(const float* __restrict x, int64_t k, int8_t* __restrict q, float* factor) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  // max_ps returns its second operand when either is NaN: NaNs are ignored,
  // as in the scalar loop. Four running maxima: one would wait on max_ps's
  // latency every 8 elements.
  __m256 vmax[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t d = 0;
  for (; d + 32 <= k; d += 32)
    for (int u = 0; u < 4; ++u)
      vmax[u] = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + d + 8 * u), abs_mask), vmax[u]);
  for (; d + 8 <= k; d += 8) vmax[0] = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + d), abs_mask), vmax[0]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(_mm256_max_ps(vmax[0], vmax[1]), _mm256_max_ps(vmax[2], vmax[3])));
  float amax = 0.0f;
  for (float l : lanes) amax = l > amax ? l : amax;
  for (; d < k; ++d) {
    const float a = std::fabs(x[d]);
    amax = a > amax ? a : amax;
  }
  const float a = amax > 1e-5f ? amax : 1e-5f;
  const float inv = 127.0f / a;
  const __m256 vinv = _mm256_set1_ps(inv), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
  for (d = 0; d + 8 <= k; d += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + d), vinv);
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> 0
    v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
    const __m256i i = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + d), _mm_packs_epi16(p16, p16));
  }
  for (; d < k; ++d) q[d] = round_clamp_int8(x[d] * inv);
  *factor = a / 127.0f;
}

}  // namespace tfmbs::fabric::quant_detail
