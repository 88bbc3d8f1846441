// Dropout on tfmbs. at::dropout sends a PrivateUse1 tensor to native_dropout
// (the fused path of CUDA), while a CPU tensor takes the composite path:
// noise = bernoulli(1 - p) / (1 - p), out = input * noise. This kernel runs
// that same composite, drawing from the tfmbs device's generator, so a
// seeded tfmbs dropout gives CPU's values to the bit.
#include <ATen/ATen.h>
#include <torch/library.h>

namespace tfmbs {
namespace {

std::tuple<at::Tensor, at::Tensor> native_dropout(const at::Tensor& input, double p,
                                                  std::optional<bool> train) {
  if (input.numel() == 0) return {input, at::empty_like(input)};
  if (train.has_value() && !*train) {
    return {input.clone(), at::ones_like(input, LEGACY_CONTIGUOUS_MEMORY_FORMAT)};
  }
  const double keep = 1. - p;
  at::Tensor mask = at::empty_like(input, LEGACY_CONTIGUOUS_MEMORY_FORMAT).bernoulli_(keep);
  // keep == 0 (p == 1) drops everything, as CPU's native_dropout does.
  at::Tensor noise = keep == 0 ? at::zeros_like(mask) : mask.div(keep);
  return {input.mul(noise), mask};
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) { m.impl("native_dropout", native_dropout); }

}  // namespace
}  // namespace tfmbs
