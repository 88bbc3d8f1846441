// One call of a PyTorch CPU kernel on tfmbs tensors: the pool is host memory,
// so the kernel runs on zero-copy CPU views of the device tensors. HostCall
// holds what that takes and what it must undo: the views, the device the op
// runs for, the tfmbs generators lent to the kernel as CPU generators, and
// the results brought back to the device. The host kernels (HostKernel.h)
// and the boxed CPU fallback both run their calls through it.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/SmallVector.h>

#include <optional>
#include <string>

#include "aten/CpuAlias.h"
#include "device/OpLog.h"

namespace tfmbs {

class HostCall {
 public:
  // The CPU view of an argument (`t` itself if it is not a tfmbs tensor).
  // Tensors of one op share a device, as on CUDA: a CPU tensor is accepted
  // only as a 0-dim scalar or where `allow_cpu` (indices).
  at::Tensor tensor(const at::Tensor& t, bool allow_cpu = false);
  // A tfmbs device argument (a factory's): recorded, replaced by CPU.
  c10::Device device_argument(c10::Device device);
  // The CPU generator to pass for a generator argument: a tfmbs generator's
  // state on loan, or for none the op's device's default generator (a random
  // op on a CUDA device draws from that device's generator, never CPU's).
  // Arguments of other devices pass unchanged.
  std::optional<at::Generator> generator(const std::optional<at::Generator>& generator);

  // After the arguments, before the kernel: checks the devices, resolves the
  // default generators; returns the op's device.
  c10::DeviceIndex begin(const char* op_name);
  // After the kernel: the generators advance as the kernel advanced their
  // loans, and mutated arguments (in-place, out=) show the kernel's changes.
  void end();

  // A result of the kernel as a tfmbs tensor: a view of a device argument
  // stays a view of it, a block the kernel allocated in the pool is adopted,
  // anything else is copied into the pool.
  at::Tensor to_device(const at::Tensor& result) const;

  c10::DeviceIndex device() const { return device_; }
  const CpuAliases& aliases() const { return aliases_; }
  // Fills the op log's row for this call of `op` (a profiler records).
  void describe(OpRecord& record, std::string op) const;

 private:
  struct Loan {
    at::Generator device_generator;  // undefined until begin() for a default
    at::Generator cpu_generator;
  };
  CpuAliases aliases_;
  c10::SmallVector<Loan, 1> loans_;
  c10::DeviceIndex device_ = -1;
  bool cpu_tensor_ = false;  // a non-scalar CPU tensor among the arguments
};

}  // namespace tfmbs
