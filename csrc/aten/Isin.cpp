// isin(elements, test_elements) on tfmbs. With one test element it is
// elements == test_elements (!= when inverted): the same type promotion
// (at::result_type of the two tensors, as the CPU kernel applies), the same
// NaN rule and the same shape, but vectorized, where the CPU kernel visits
// the elements one at a time through a loop over the test elements, ten
// times slower on a vocabulary-sized tensor (transformers' generate asks it
// every step). Other cases run the CPU kernel (HostOps.def).
#include <ATen/ATen.h>
#include <ATen/Operators.h>
#include <torch/library.h>

#include "aten/native/HostKernel.h"

namespace tfmbs {
namespace {

at::Tensor isin(const at::Tensor& elements, const at::Tensor& test_elements, bool assume_unique, bool invert) {
  // The dtypes the CPU kernel takes (any two promote to one of them).
  const auto supported = [](const at::Tensor& t) {
    switch (t.scalar_type()) {
      case at::kByte: case at::kChar: case at::kShort: case at::kInt: case at::kLong:
      case at::kHalf: case at::kBFloat16: case at::kFloat: case at::kDouble: return true;
      default: return false;
    }
  };
  // Others go to the CPU kernel, for its error; a test tensor with more
  // dimensions than elements would broadcast the shape.
  if (test_elements.numel() == 1 && test_elements.dim() <= elements.dim() && supported(elements) &&
      supported(test_elements) && elements.device() == test_elements.device()) {
    return invert ? at::ne(elements, test_elements) : at::eq(elements, test_elements);
  }
  return HostKernel<at::_ops::isin_Tensor_Tensor>::call(elements, test_elements, assume_unique, invert);
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) { m.impl("isin.Tensor_Tensor", isin); }

}  // namespace
}  // namespace tfmbs
