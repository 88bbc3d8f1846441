// Per-token activation quantization: the form the fabric's lanes take the
// activations of a ternary linear layer in, with the per-token factor the
// layer's epilogue multiplies by.
//   int8     a = max(max|x|, 1e-5), q = clamp(round_half_even(x * (127 / a)),
//            -127, 127) (the BitNet b1.58 scheme), NaN counts as 0;
//            factor = a / 127.
//   ternary  q = sign(x); factor = mean|x| (summed in double).
// Each SIMD variant gives the scalar version's bytes exactly.
#pragma once

#include <cstdint>

#include "fabric/cpu_features.h"

namespace tfmbs::fabric {

void quantize_row_int8(const float* x, int64_t k, int8_t* q, float* factor);
void quantize_row_ternary(const float* x, int64_t k, int8_t* q, float* factor);

namespace quant_detail {
// The implementations of one level (Scalar or Avx2; the caller checks
// cpu_supports first).
void quantize_row_int8(Isa isa, const float* x, int64_t k, int8_t* q, float* factor);
void quantize_row_int8_scalar(const float* x, int64_t k, int8_t* q, float* factor);
void quantize_row_int8_avx2(const float* x, int64_t k, int8_t* q, float* factor);
// The rounding tail both variants share: one value of x * (127 / a).
inline int8_t round_clamp_int8(float v) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting rounds half to even
  v = v == v ? v : 0.0f;
  v = v > 127.0f ? 127.0f : v;
  v = v < -127.0f ? -127.0f : v;
  v = (v + kRound) - kRound;
  return static_cast<int8_t>(static_cast<int32_t>(v));
}
}  // namespace quant_detail

}  // namespace tfmbs::fabric
