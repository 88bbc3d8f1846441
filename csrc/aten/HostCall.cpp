#include "aten/HostCall.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

#include <mutex>

#include "aten/native/Common.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {

at::Tensor HostCall::tensor(const at::Tensor& t, bool allow_cpu) {
  if (!t.defined()) return t;
  const c10::Device device = t.device();
  if (device.type() != kTfmbs) {
    if (device.type() == c10::kCPU && t.dim() > 0 && !allow_cpu) cpu_tensor_ = true;
    return t;
  }
  if (device_ < 0) device_ = device.index();
  TORCH_CHECK(device_ == device.index(),
              "Expected all tensors to be on the same device, but found at least two devices, "
              "tfmbs:", static_cast<int>(device_), " and ", device, "!");
  return aliases_(t);
}

c10::Device HostCall::device_argument(c10::Device device) {
  if (device.type() != kTfmbs) return device;
  if (device_ < 0) device_ = resolve_device(device.has_index() ? device.index() : -1);
  return c10::Device(c10::kCPU);
}

std::optional<at::Generator> HostCall::generator(const std::optional<at::Generator>& generator) {
  const bool given = generator.has_value() && generator->defined();
  if (given && generator->device().type() != kTfmbs) return generator;
  loans_.push_back({given ? *generator : at::Generator(), at::make_generator<at::CPUGeneratorImpl>()});
  return loans_.back().cpu_generator;
}

c10::DeviceIndex HostCall::begin(const char* op_name) {
  TORCH_CHECK(!cpu_tensor_ || device_ < 0,
              "Expected all tensors to be on the same device, but found at least two devices, "
              "tfmbs:", static_cast<int>(device_), " and cpu! (", op_name, ")");
  if (device_ < 0) device_ = current_device();
  for (Loan& loan : loans_) {
    if (!loan.device_generator.defined()) {
      loan.device_generator = at::globalContext().defaultGenerator(c10::Device(kTfmbs, device_));
    }
    std::lock_guard<std::mutex> lock(loan.device_generator.mutex());
    loan.cpu_generator.set_state(loan.device_generator.get_state());
  }
  return device_;
}

void HostCall::end() {
  for (Loan& loan : loans_) {
    std::lock_guard<std::mutex> lock(loan.device_generator.mutex());
    loan.device_generator.set_state(loan.cpu_generator.get_state());
  }
  for (const auto& [original, alias] : aliases_.pairs()) {
    if (original.storage().data() != alias.storage().data() ||
        original.sizes() != alias.sizes() || original.strides() != alias.strides() ||
        original.storage_offset() != alias.storage_offset()) {
      sync_back(original, alias);
    }
  }
}

at::Tensor HostCall::to_device(const at::Tensor& result) const {
  if (!result.defined() || result.device().type() != c10::kCPU) return result;
  for (const auto& [original, alias] : aliases_.pairs()) {
    if (result.is_same(alias)) return original;
    if (result.storage().is_alias_of(alias.storage())) {
      return device_view(original.storage(), result, result.dtype());
    }
  }
  return adopt_or_copy(result, device_);
}

void HostCall::describe(OpRecord& record, std::string op) const {
  record.op = std::move(op);
  record.engine = "host";
  record.device = device_;
  record.shapes.clear();
  record.bytes = 0;
  for (const auto& [original, alias] : aliases_.pairs()) {
    if (!record.shapes.empty()) record.shapes += ", ";
    record.shapes += c10::str(original.sizes());
    record.bytes += static_cast<uint64_t>(original.numel() * original.element_size());
  }
}

}  // namespace tfmbs
