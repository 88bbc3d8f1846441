// tfmbs::sliding_window_attention: local attention where query i sees only
// the keys of its window,
//   causal:      i - window < j <= i
//   not causal:  |i - j| < window
// out_i = softmax_j(scale * q_i . k_j + mask_ij) v_j over those keys; scale
// defaults to 1/sqrt(head_dim); the optional extra mask (bool: attend where
// True; float: added to the scores, as SDPA's attn_mask) broadcasts to
// [B, Hq, L, L] and is read only inside the window. q [B, Hq, L, D], k and
// v [B, Hkv, L, D] with Hq a multiple of Hkv (grouped-query heads: query
// head h reads kv head h / (Hq / Hkv), never a repeated copy). A query that
// sees no key (all masked) gets zeros, as SDPA's math kernel gives.
//
// Flash attention restricted to the band: tiles of queries x keys whose
// scores are BLAS GEMMs, an online softmax over the key tiles (the fabric's
// attention_kernels), so O(L * window * D) time and O(L * D) memory, never
// an L x L matrix. The forward also returns each row's log-sum-exp, from
// which the backward recomputes the probabilities.
// float32 computes in float32; bfloat16 and float16 inputs are computed in
// float32 and rounded once at the end.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace tfmbs {

// Checks q, k, v, window and the mask as every kernel (Meta included)
// does, naming what is wrong.
void check_sliding_window_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t window, const std::optional<at::Tensor>& mask);

// (out [B, Hq, L, D] in q's dtype, logsumexp [B, Hq, L] float32)
std::tuple<at::Tensor, at::Tensor> sliding_window_attention_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask);
std::tuple<at::Tensor, at::Tensor> sliding_window_attention_tfmbs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask);
std::tuple<at::Tensor, at::Tensor> sliding_window_attention_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask);

// (grad_q, grad_k, grad_v, grad_scores): the gradients in the inputs'
// dtypes, and with mask_grad the gradient of the (masked) scores as a
// float32 [B, Hq, L, L] tensor, zero outside the window, which the caller
// sums to the mask's shape; else an empty tensor.
using SlidingWindowGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
SlidingWindowGrads sliding_window_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask, bool mask_grad);
SlidingWindowGrads sliding_window_attention_backward_tfmbs(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask, bool mask_grad);
SlidingWindowGrads sliding_window_attention_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask, bool mask_grad);

}  // namespace tfmbs
