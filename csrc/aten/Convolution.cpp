// Convolutions on tfmbs. ATen sends convolutions of backends it does not
// know to convolution_overrideable / convolution_backward_overrideable; here
// they run PyTorch's CPU convolution (same algorithm choice, same numbers)
// on device memory, with results adopted into the pool.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "aten/native/Common.h"

namespace tfmbs {
namespace {

at::Tensor convolution(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                       at::IntArrayRef output_padding, int64_t groups) {
  return run_on_host(input.device().index(), [&] {
    return at::convolution(cpu_alias(input), cpu_alias(weight), cpu_alias_optional(bias), stride,
                           padding, dilation, transposed, output_padding, groups);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
    at::IntArrayRef output_padding, int64_t groups, std::array<bool, 3> output_mask) {
  // The bias gradient has one entry per output channel.
  int64_t out_channels = transposed ? weight.size(1) * groups : weight.size(0);
  return run_on_host(input.device().index(), [&] {
    return at::convolution_backward(cpu_alias(grad_output), cpu_alias(input), cpu_alias(weight),
                                    at::OptionalIntArrayRef(at::IntArrayRef(&out_channels, 1)), stride,
                                    padding, dilation, transposed, output_padding, groups, output_mask);
  });
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("convolution_overrideable", convolution);
  m.impl("convolution_backward_overrideable", convolution_backward);
}

}  // namespace
}  // namespace tfmbs
