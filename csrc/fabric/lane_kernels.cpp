#include "fabric/lane_kernels.h"

namespace tfmbs::fabric {
namespace lane_detail {

void fp32_banks_scalar(const int8_t* w, const float* x, int64_t k, float* bank) {
  for (int64_t d = 0; d < k; ++d) {
    const int wv = w[d];
    const float xv = x[d];
    if (wv == 0 || xv == 0.0f) continue;
    bank[d % 16] = wv > 0 ? bank[d % 16] + xv : bank[d % 16] - xv;
  }
}

void fp32_banks(Isa isa, const int8_t* w, const float* x, int64_t k, float* bank) {
  if (isa != Isa::Scalar) return fp32_banks_avx2(w, x, k, bank);
  fp32_banks_scalar(w, x, k, bank);
}

}  // namespace lane_detail

int32_t lane_dot_int8(const int8_t* w, const int8_t* x, int64_t k) {
  uint32_t s = 0;  // the lane's int32 accumulator, wrapping
  for (int64_t d = 0; d < k; ++d) s += static_cast<uint32_t>(static_cast<int32_t>(w[d]) * x[d]);
  return static_cast<int32_t>(s);
}

float lane_dot_fp32(const int8_t* w, const float* x, int64_t k) {
  static const Isa isa = cpu_supports(Isa::Avx2) ? Isa::Avx2 : Isa::Scalar;
  float bank[16] = {};
  lane_detail::fp32_banks(isa, w, x, k, bank);
  for (int s = 8; s >= 1; s /= 2)
    for (int j = 0; j < s; ++j) bank[j] = bank[j] + bank[j + s];
  return bank[0];
}

}  // namespace tfmbs::fabric
