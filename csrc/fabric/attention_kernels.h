// The float32 inner loops of local attention (tfmbs::sliding_window_attention):
// a dot product and y += alpha * x. Each level gives the same bits: the dot
// product sums in 8 interleaved partial sums, then the partials in lane
// order, then the tail; products and sums stay separate roundings (no fused
// multiply-add: the fabric builds with -ffp-contract=off).
#pragma once

#include <cstdint>

#include "fabric/cpu_features.h"

namespace tfmbs::fabric {

struct AttentionKernels {
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float alpha, const float* x, float* y, int64_t n);
};

// The kernels of `isa` (AVX-512 machines run the AVX2 twins); the caller
// checks cpu_supports(isa).
const AttentionKernels& attention_kernels(Isa isa);
// The kernels of the best level this CPU supports.
const AttentionKernels& best_attention_kernels();

namespace attention_detail {
float dot_scalar(const float* a, const float* b, int64_t n);
void axpy_scalar(float alpha, const float* x, float* y, int64_t n);
float dot_avx2(const float* a, const float* b, int64_t n);
void axpy_avx2(float alpha, const float* x, float* y, int64_t n);
}  // namespace attention_detail

}  // namespace tfmbs::fabric
