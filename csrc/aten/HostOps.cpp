// Registers the host kernels of HostOps.def for the tfmbs key.
#include <ATen/Operators.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "aten/HostOps.h"
#include "aten/native/HostKernel.h"

namespace tfmbs {
namespace {

template <class Op>
std::string registration_name() {
  std::string name = std::string(Op::name).substr(sizeof("aten::") - 1);
  return *Op::overload_name ? name + "." + Op::overload_name : name;
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
#define TFMBS_HOST_OP(op) \
  m.impl(registration_name<at::_ops::op>().c_str(), TORCH_FN(HostKernel<at::_ops::op>::call));
#include "aten/HostOps.def"
#undef TFMBS_HOST_OP
}

}  // namespace

std::vector<std::string> host_ops() {
  return {
#define TFMBS_HOST_OP(op) registration_name<at::_ops::op>(),
#include "aten/HostOps.def"
#undef TFMBS_HOST_OP
  };
}

}  // namespace tfmbs
