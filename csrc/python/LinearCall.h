// torch_tfmbs._C.ternary_linear_forward (LinearCall.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace tfmbs {

void bind_linear_call(pybind11::module& m);

}  // namespace tfmbs
