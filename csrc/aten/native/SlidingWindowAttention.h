// tfmbs::sliding_window_attention: local attention where query i sees only
// the keys of its window,
//   causal:      i - window < j <= i
//   not causal:  |i - j| < window
// out_i = softmax_j(scale * q_i . k_j) v_j over those keys; scale defaults
// to 1/sqrt(head_dim). q [B, Hq, L, D], k and v [B, Hkv, L, D] with Hq a
// multiple of Hkv (grouped-query heads: query head h reads kv head
// h / (Hq / Hkv), never a repeated copy). Cost O(L * window * D) time and
// O(L * D) memory: no L x L matrix, a row of at most 2 * window - 1 scores
// per thread; the inner loops are the fabric's attention_kernels (scalar
// and AVX2 twins, the same bits). The forward also returns the log-sum-exp
// of each row's scores, from which the backward recomputes the
// probabilities.
// float32 computes in float32; bfloat16 and float16 inputs are computed in
// float32 and rounded once at the end.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace tfmbs {

// Checks q, k, v, window and scale as every kernel (Meta included) does,
// naming what is wrong.
void check_sliding_window_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t window);

// (out [B, Hq, L, D] in q's dtype, logsumexp [B, Hq, L] float32)
std::tuple<at::Tensor, at::Tensor> sliding_window_attention_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale);
std::tuple<at::Tensor, at::Tensor> sliding_window_attention_tfmbs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale);
std::tuple<at::Tensor, at::Tensor> sliding_window_attention_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale);

// (grad_q, grad_k, grad_v) in the inputs' dtypes.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_tfmbs(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale);

}  // namespace tfmbs
