// The float32 inner loop of local attention's softmax
// (tfmbs::sliding_window_attention): x[j] = exp(x[j] - shift), summed. The
// score tiles around it are BLAS GEMMs; this is the part no BLAS does.
// Each level gives the same bits: the same polynomial exp with the same
// roundings (no fused multiply-add: the fabric builds with
// -ffp-contract=off), summed in 8 interleaved partial sums, then the
// partials in lane order, then the tail.
#pragma once

#include <cstdint>

#include "fabric/cpu_features.h"

namespace tfmbs::fabric {

struct AttentionKernels {
  // x[j] = exp(x[j] - shift) for j < n; returns their sum. Meant for
  // x[j] - shift <= 0 (shift is the row's maximum or its log-sum-exp):
  // within 2 ulp of exp there, exactly 0 below -87 (and for -inf).
  float (*exp_sum)(float* x, int64_t n, float shift);
};

// The kernels of `isa` (AVX-512 machines run the AVX2 twins); the caller
// checks cpu_supports(isa).
const AttentionKernels& attention_kernels(Isa isa);
// The kernels of the best level this CPU supports.
const AttentionKernels& best_attention_kernels();

namespace attention_detail {
float exp_sum_scalar(float* x, int64_t n, float shift);
float exp_sum_avx2(float* x, int64_t n, float shift);
}  // namespace attention_detail

}  // namespace tfmbs::fabric
