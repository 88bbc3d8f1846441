// The PrivateUse1 hooks: what ATen asks of a backend outside the dispatcher
// (availability, devices, generators, storage resize, pointer lookup).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/DeviceGuard.h>

#include <mutex>
#include <vector>

#include "device/PinnedHostAllocator.h"
#include "device/StreamWork.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

// A CPU generator (same algorithm, so seeded tfmbs streams equal CPU's)
// that identifies itself as a tfmbs device's.
struct TfmbsGenerator final : public at::CPUGeneratorImpl {
  explicit TfmbsGenerator(c10::DeviceIndex index) {
    device_ = c10::Device(c10::DeviceType::PrivateUse1, index);
    key_set_ = c10::DispatchKeySet(c10::DispatchKey::PrivateUse1);
  }
};

class TfmbsHooks final : public at::PrivateUse1HooksInterface {
 public:
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return device_count() > 0; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  void init() const override { init_devices(); }
  c10::DeviceIndex deviceCount() const override { return device_count(); }
  void setCurrentDevice(c10::DeviceIndex device) const override { set_current_device(device); }
  c10::DeviceIndex getCurrentDevice() const override { return current_device(); }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex device) const override {
    c10::DeviceIndex old = current_device();
    set_current_device(device);
    return old;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex device) const override {
    return exchangeDevice(device);
  }

  const at::Generator& getDefaultGenerator(c10::DeviceIndex device) const override {
    static std::once_flag once;
    static std::vector<at::Generator>* generators = nullptr;  // leaked
    std::call_once(once, [] {
      generators = new std::vector<at::Generator>;
      for (c10::DeviceIndex i = 0; i < device_count(); ++i) {
        generators->push_back(at::make_generator<TfmbsGenerator>(i));
        generators->back().set_current_seed(c10::detail::getNonDeterministicRandom());
      }
    });
    return (*generators)[resolve_device(device)];
  }
  at::Generator getNewGenerator(c10::DeviceIndex device) const override {
    return at::make_generator<TfmbsGenerator>(resolve_device(device));
  }

  at::Device getDeviceFromPtr(void* data) const override {
    c10::DeviceIndex device = device_of_pointer(data);
    TORCH_CHECK(device >= 0, "tfmbs: pointer ", data, " is not in any tfmbs device's memory");
    return {c10::DeviceType::PrivateUse1, device};
  }
  bool isPinnedPtr(const void* data) const override { return is_pinned_host_pointer(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return pinned_host_allocator(); }

  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t new_bytes) const override {
    TORCH_CHECK(storage.resizable(), "tfmbs: trying to resize storage that is not resizable");
    // The new bytes come from the storage's own device's pool.
    c10::DeviceGuard guard(storage.device());
    // Queued work on any stream may still use the old bytes.
    await_current_stream(storage.device().index());
    settle_streams(storage.device().index());
    c10::DataPtr fresh = storage.allocator()->allocate(new_bytes);
    size_t keep = std::min(new_bytes, storage.nbytes());
    if (keep > 0) std::memcpy(fresh.get(), storage.data(), keep);
    storage.unsafeGetStorageImpl()->set_data_ptr_noswap(std::move(fresh));
    storage.unsafeGetStorageImpl()->set_nbytes(new_bytes);
  }
};

// Registered when the library loads; leaked (hooks outlive the interpreter).
const bool g_registered = [] {
  at::RegisterPrivateUse1HooksInterface(new TfmbsHooks);
  return true;
}();

}  // namespace
}  // namespace tfmbs
