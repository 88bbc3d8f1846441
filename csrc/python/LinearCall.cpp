// TFMBSLinear's inference call into tfmbs::ternary_linear, straight through
// the C++ dispatcher: the Python op binding's per-call work (parsing eight
// arguments against the schema into a boxed stack, its torch-function
// checks) costs more than a small layer's kernel. The op is still
// dispatched, so profilers, dispatch modes and every backend see it as
// before.
#include "python/LinearCall.h"

#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

namespace tfmbs {
namespace {

namespace py = pybind11;

using LinearSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const std::optional<at::Tensor>&, int64_t, int64_t, c10::string_view,
                                   c10::string_view);

// A torch.Tensor or nn.Parameter (not a subclass with its own
// __torch_function__), or None where allowed.
bool plain_tensor(py::handle h, bool none_ok = false) {
  return (none_ok && h.is_none()) || THPVariable_CheckExact(h.ptr());
}

// None when the call needs the Python path: gradients on, a tensor
// subclass or torch function mode (they must see the op), or float64 input
// (TFMBSLinear computes it in float32).
py::object ternary_linear_inference(py::handle input, py::handle packed, py::handle scale, py::handle bias,
                                    int64_t out_features, int64_t in_features, const std::string& packing,
                                    const std::string& act_mode) {
  if (c10::GradMode::is_enabled() || at::impl::torch_function_mode_enabled() || !plain_tensor(input) ||
      !plain_tensor(packed) || !plain_tensor(scale) || !plain_tensor(bias, /*none_ok=*/true))
    return py::none();
  const at::Tensor& x = THPVariable_Unpack(input.ptr());
  if (x.scalar_type() == at::kDouble) return py::none();
  std::optional<at::Tensor> b;
  if (!bias.is_none()) b = THPVariable_Unpack(bias.ptr());
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tfmbs::ternary_linear", "")
                             .typed<LinearSignature>();
  at::Tensor y;
  {
    py::gil_scoped_release no_gil;
    // Nothing needs a gradient: past the op's autograd kernel, as
    // torch._C._AutoDispatchBelowAutograd would do.
    at::AutoDispatchBelowAutograd below_autograd;
    y = op.call(x, THPVariable_Unpack(packed.ptr()), THPVariable_Unpack(scale.ptr()), b, out_features,
                in_features, packing, act_mode);
  }
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(y)));
}

}  // namespace

void bind_linear_call(py::module& m) {
  m.def("ternary_linear_inference", &ternary_linear_inference);
}

}  // namespace tfmbs
