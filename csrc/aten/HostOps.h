#pragma once

#include <string>
#include <vector>

namespace tfmbs {

// The ops (e.g. "add.Tensor") whose tfmbs kernel is a host kernel.
std::vector<std::string> host_ops();

}  // namespace tfmbs
