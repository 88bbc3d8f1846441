// TFMBSLinear's inference call into tfmbs::ternary_linear, straight through
// the C++ dispatcher. It is a plain CPython function that reads the layer's
// own dicts: a decode step calls it between other ops, when little of the
// interpreter is in the caches, and every attribute read in Python and every
// argument converted by a binding layer then costs cache misses that outweigh
// a small layer's kernel. The op is still dispatched, so profilers, dispatch
// modes and every backend see it as before.
#include "python/LinearCall.h"

#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

namespace tfmbs {
namespace {

using LinearSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const std::optional<at::Tensor>&, int64_t, int64_t, c10::string_view,
                                   c10::string_view);

// A torch.Tensor or nn.Parameter (not a subclass with its own
// __torch_function__), or None where allowed.
bool plain_tensor(PyObject* o, bool none_ok = false) {
  return o != nullptr && ((none_ok && o == Py_None) || THPVariable_CheckExact(o));
}

PyObject* interned(const char* name) { return PyUnicode_InternFromString(name); }

// `name` in `dict` (borrowed), or nullptr if absent or `dict` is no dict.
PyObject* entry(PyObject* dict, PyObject* name) {
  return dict != nullptr && PyDict_CheckExact(dict) ? PyDict_GetItem(dict, name) : nullptr;
}

bool read_int(PyObject* o, int64_t& out) {
  if (o == nullptr || !PyLong_CheckExact(o)) return false;
  out = PyLong_AsLongLong(o);
  if (out == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return true;
}

bool read_str(PyObject* o, std::string& out) {
  if (o == nullptr || !PyUnicode_CheckExact(o)) return false;
  Py_ssize_t size = 0;
  const char* s = PyUnicode_AsUTF8AndSize(o, &size);
  if (s == nullptr) {
    PyErr_Clear();
    return false;
  }
  out.assign(s, static_cast<size_t>(size));  // short: no allocation
  return true;
}

// ternary_linear_forward(layer, x): layer(x) for a TFMBSLinear whose
// packed weight is its weight (no latent weight), or None when the call
// needs the Python path: gradients on, a tensor subclass or torch function
// mode (they must see the op), float64 input (TFMBSLinear computes it in
// float32), or a layer whose tensors are not plain entries of its dicts (a
// parametrization moved one).
PyObject* ternary_linear_forward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "ternary_linear_forward(layer, x) takes 2 arguments");
    return nullptr;
  }
  static PyObject* const parameters_name = interned("_parameters");
  static PyObject* const buffers_name = interned("_buffers");
  static PyObject* const weight_name = interned("weight");
  static PyObject* const bias_name = interned("bias");
  static PyObject* const packed_name = interned("packed_weight");
  static PyObject* const scale_name = interned("weight_scale");
  static PyObject* const out_name = interned("out_features");
  static PyObject* const in_name = interned("in_features");
  static PyObject* const packing_name = interned("packing");
  static PyObject* const act_mode_name = interned("act_mode");
  PyObject* const layer = args[0];
  PyObject* const input = args[1];
  if (c10::GradMode::is_enabled() || at::impl::torch_function_mode_enabled() || !plain_tensor(input))
    Py_RETURN_NONE;
  // Borrowed from the layer's dicts: read everything before the GIL goes.
  const auto attrs = pybind11::reinterpret_steal<pybind11::object>(PyObject_GenericGetDict(layer, nullptr));
  if (!attrs) return nullptr;
  PyObject* const params = entry(attrs.ptr(), parameters_name);
  PyObject* const buffers = entry(attrs.ptr(), buffers_name);
  PyObject* const packed = entry(buffers, packed_name);
  PyObject* const scale = entry(buffers, scale_name);
  PyObject* const bias = entry(params, bias_name);
  int64_t out_features = 0, in_features = 0;
  std::string packing, act_mode;
  if (entry(params, weight_name) != Py_None || !plain_tensor(packed) || !plain_tensor(scale) ||
      !plain_tensor(bias, /*none_ok=*/true) || !read_int(entry(attrs.ptr(), out_name), out_features) ||
      !read_int(entry(attrs.ptr(), in_name), in_features) || !read_str(entry(attrs.ptr(), packing_name), packing) ||
      !read_str(entry(attrs.ptr(), act_mode_name), act_mode))
    Py_RETURN_NONE;
  const at::Tensor& x = THPVariable_Unpack(input);
  if (x.scalar_type() == at::kDouble) Py_RETURN_NONE;
  // Copies (references of their own): the GIL goes, and another thread may
  // then replace the layer's tensors.
  const at::Tensor w = THPVariable_Unpack(packed), s = THPVariable_Unpack(scale);
  std::optional<at::Tensor> b;
  if (bias != Py_None) b = THPVariable_Unpack(bias);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tfmbs::ternary_linear", "")
                             .typed<LinearSignature>();
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    // Nothing needs a gradient: past the op's autograd kernel, as
    // torch._C._AutoDispatchBelowAutograd would do.
    at::AutoDispatchBelowAutograd below_autograd;
    y = op.call(x, w, s, b, out_features, in_features, packing, act_mode);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyMethodDef linear_methods[] = {
    {"ternary_linear_forward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&ternary_linear_forward)),
     METH_FASTCALL, "layer(x) for an inference TFMBSLinear, or None when it needs the Python path"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

void bind_linear_call(pybind11::module& m) {
  if (PyModule_AddFunctions(m.ptr(), linear_methods) != 0) throw pybind11::error_already_set();
}

}  // namespace tfmbs
