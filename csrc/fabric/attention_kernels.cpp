#include "fabric/attention_kernels.h"

#include "fabric/attention_exp.h"

namespace tfmbs::fabric {
namespace attention_detail {

float exp_sum_scalar(float* x, int64_t n, float shift) {
  float lanes[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += x[j + l] = exp_poly(x[j + l] - shift);
  }
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; j < n; ++j) sum += x[j] = exp_poly(x[j] - shift);
  return sum;
}

}  // namespace attention_detail

const AttentionKernels& attention_kernels(Isa isa) {
  static const AttentionKernels scalar{&attention_detail::exp_sum_scalar};
  static const AttentionKernels avx2{&attention_detail::exp_sum_avx2};
  return isa == Isa::Scalar ? scalar : avx2;
}

const AttentionKernels& best_attention_kernels() {
  static const AttentionKernels& best =
      attention_kernels(cpu_supports(Isa::Avx2) ? Isa::Avx2 : Isa::Scalar);
  return best;
}

}  // namespace tfmbs::fabric
