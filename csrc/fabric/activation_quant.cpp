#include "fabric/activation_quant.h"

#include <cmath>

namespace tfmbs::fabric {
namespace quant_detail {

// Clamping before rounding equals rounding before clamping (the bounds are
// integers); max is exact and the product is one IEEE multiply, so every
// variant that keeps these steps gives the same bytes.
void quantize_row_int8_scalar(const float* __restrict x, int64_t k, int8_t* __restrict q, float* factor) {
  float amax = 0.0f;
  for (int64_t d = 0; d < k; ++d) {
    const float a = std::fabs(x[d]);
    amax = a > amax ? a : amax;  // a NaN never wins
  }
  const float a = amax > 1e-5f ? amax : 1e-5f;
  const float inv = 127.0f / a;
  for (int64_t d = 0; d < k; ++d) q[d] = round_clamp_int8(x[d] * inv);
  *factor = a / 127.0f;
}

void quantize_row_int8(Isa isa, const float* x, int64_t k, int8_t* q, float* factor) {
  if (isa != Isa::Scalar) return quantize_row_int8_avx2(x, k, q, factor);
  quantize_row_int8_scalar(x, k, q, factor);
}

}  // namespace quant_detail

void quantize_row_int8(const float* x, int64_t k, int8_t* q, float* factor) {
  static const Isa isa = cpu_supports(Isa::Avx2) ? Isa::Avx2 : Isa::Scalar;
  quant_detail::quantize_row_int8(isa, x, k, q, factor);
}

void quantize_row_ternary(const float* __restrict x, int64_t k, int8_t* __restrict q, float* factor) {
  double sum = 0.0;
  for (int64_t d = 0; d < k; ++d) sum += std::fabs(static_cast<double>(x[d]));
  for (int64_t d = 0; d < k; ++d) q[d] = static_cast<int8_t>((x[d] > 0.0f) - (x[d] < 0.0f));
  *factor = k > 0 ? static_cast<float>(sum / static_cast<double>(k)) : 0.0f;
}

}  // namespace tfmbs::fabric
