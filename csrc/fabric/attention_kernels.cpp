#include "fabric/attention_kernels.h"

namespace tfmbs::fabric {
namespace attention_detail {

float dot_scalar(const float* a, const float* b, int64_t n) {
  float lanes[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += a[d + l] * b[d + l];
  }
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

void axpy_scalar(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t d = 0; d < n; ++d) y[d] += alpha * x[d];
}

}  // namespace attention_detail

const AttentionKernels& attention_kernels(Isa isa) {
  static const AttentionKernels scalar{&attention_detail::dot_scalar, &attention_detail::axpy_scalar};
  static const AttentionKernels avx2{&attention_detail::dot_avx2, &attention_detail::axpy_avx2};
  return isa == Isa::Scalar ? scalar : avx2;
}

const AttentionKernels& best_attention_kernels() {
  static const AttentionKernels& best =
      attention_kernels(cpu_supports(Isa::Avx2) ? Isa::Avx2 : Isa::Scalar);
  return best;
}

}  // namespace tfmbs::fabric
