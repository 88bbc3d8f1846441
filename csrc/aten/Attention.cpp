// Scaled dot product attention on tfmbs: the same choice and the same fused
// kernel (the CPU flash-attention kernel) CPU PyTorch uses, run on device
// memory, so F.scaled_dot_product_attention gives CPU's numbers (causal,
// masked and grouped-query forms) instead of the math decomposition.
#include <ATen/ATen.h>
#include <ATen/native/DispatchStub.h>
#include <ATen/native/transformers/attention.h>
#include <ATen/native/transformers/sdp_utils_cpp.h>
#include <ATen/ops/_fused_sdp_choice_native.h>
#include <torch/library.h>

#include "aten/native/Common.h"

namespace tfmbs {
namespace {

// CPU's choice, made from the tensors' metadata alone (shapes, strides,
// dtypes, requires_grad), so it works on FakeTensors under torch.compile and
// torch.export. Where CPU runs its flash kernel, grouped-query heads
// included, tfmbs runs the same kernel (overrideable); else CPU's math.
int64_t choose_sdp_backend(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                           const std::optional<at::Tensor>& attn_mask, double dropout_p,
                           bool is_causal, std::optional<double> scale, bool enable_gqa) {
  const int64_t cpu_choice = at::native::_fused_sdp_choice_cpp(query, key, value, attn_mask, dropout_p,
                                                               is_causal, scale, enable_gqa);
  const bool fused = cpu_choice == static_cast<int64_t>(sdp::SDPBackend::flash_attention);
  return static_cast<int64_t>(fused ? sdp::SDPBackend::overrideable : sdp::SDPBackend::math);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, c10::SymInt, c10::SymInt, at::Tensor,
           at::Tensor, at::Tensor>
sdpa_forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
             const std::optional<at::Tensor>& attn_bias, double dropout_p, bool is_causal,
             bool /*return_debug_mask*/, std::optional<double> scale) {
  auto [out, logsumexp] = run_on_host(query.device().index(), [&] {
    return at::_scaled_dot_product_flash_attention_for_cpu(cpu_alias(query), cpu_alias(key), cpu_alias(value),
                                                           dropout_p, is_causal, cpu_alias_optional(attn_bias),
                                                           scale);
  });
  at::Tensor empty = at::empty({0}, query.options());
  return {out, logsumexp, empty, empty, c10::SymInt(query.size(2)), c10::SymInt(key.size(2)), empty, empty, empty};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sdpa_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& attn_bias, std::array<bool, 4> /*grad_input_mask*/,
    const at::Tensor& out, const at::Tensor& logsumexp, const at::Tensor&, const at::Tensor&,
    c10::SymInt, c10::SymInt, double dropout_p, bool is_causal, const at::Tensor&,
    const at::Tensor&, std::optional<double> scale) {
  std::optional<at::Tensor> bias = attn_bias.defined() ? std::optional<at::Tensor>(attn_bias) : std::nullopt;
  auto [grad_q, grad_k, grad_v] = run_on_host(query.device().index(), [&] {
    return at::_scaled_dot_product_flash_attention_for_cpu_backward(
        cpu_alias(grad_out), cpu_alias(query), cpu_alias(key), cpu_alias(value), cpu_alias(out),
        cpu_alias(logsumexp), dropout_p, is_causal, cpu_alias_optional(bias), scale);
  });
  return {grad_q, grad_k, grad_v, at::Tensor()};
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("_fused_sdp_choice", choose_sdp_backend);
  m.impl("_scaled_dot_product_fused_attention_overrideable", sdpa_forward);
  m.impl("_scaled_dot_product_fused_attention_overrideable_backward", sdpa_backward);
}

}  // namespace
}  // namespace tfmbs

namespace at::native {
// F.scaled_dot_product_attention asks this stub, not the op above.
REGISTER_PRIVATEUSE1_DISPATCH(_fused_sdp_choice_stub, &tfmbs::choose_sdp_backend);
}  // namespace at::native
