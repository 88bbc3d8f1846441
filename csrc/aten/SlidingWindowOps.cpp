// tfmbs::sliding_window_attention and its pieces (native/SlidingWindowAttention.h):
//   _sliding_window_attention -> (out, logsumexp), with CPU, tfmbs and Meta
//     kernels; its autograd (torch_tfmbs/attention.py) calls
//   _sliding_window_attention_backward, with the same three kernels;
//   sliding_window_attention -> out, the public op (composite: its gradient
//     is the pieces').
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "aten/native/SlidingWindowAttention.h"

namespace tfmbs {
namespace {

at::Tensor sliding_window_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    int64_t window, bool causal, std::optional<double> scale,
                                    const std::optional<at::Tensor>& attn_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tfmbs::_sliding_window_attention", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, bool,
                           std::optional<double>, const std::optional<at::Tensor>&)>();
  return std::get<0>(op.call(q, k, v, window, causal, scale, attn_mask));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tfmbs, m) {
  m.def("sliding_window_attention(Tensor q, Tensor k, Tensor v, int window, bool causal=True, "
        "float? scale=None, Tensor? attn_mask=None) -> Tensor");
  m.def("_sliding_window_attention(Tensor q, Tensor k, Tensor v, int window, bool causal=True, "
        "float? scale=None, Tensor? attn_mask=None) -> (Tensor, Tensor)");
  m.def("_sliding_window_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
        "Tensor out, Tensor logsumexp, int window, bool causal, float? scale, Tensor? attn_mask, "
        "bool mask_grad) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tfmbs, CompositeImplicitAutograd, m) {
  m.impl("sliding_window_attention", &sliding_window_attention);
}

TORCH_LIBRARY_IMPL(tfmbs, CPU, m) {
  m.impl("_sliding_window_attention", &sliding_window_attention_cpu);
  m.impl("_sliding_window_attention_backward", &sliding_window_attention_backward_cpu);
}

TORCH_LIBRARY_IMPL(tfmbs, PrivateUse1, m) {
  m.impl("_sliding_window_attention", &sliding_window_attention_tfmbs);
  m.impl("_sliding_window_attention_backward", &sliding_window_attention_backward_tfmbs);
}

TORCH_LIBRARY_IMPL(tfmbs, Meta, m) {
  m.impl("_sliding_window_attention", &sliding_window_attention_meta);
  m.impl("_sliding_window_attention_backward", &sliding_window_attention_backward_meta);
}

}  // namespace tfmbs
