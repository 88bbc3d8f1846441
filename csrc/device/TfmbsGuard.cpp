// Device guard for tfmbs: current device per thread, and streams/events.
// The emulated fabric completes work before an op returns, so every stream
// is always idle; events still record a timestamp so elapsed_time works.
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <atomic>
#include <chrono>

#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

constexpr auto kDevice = c10::DeviceType::PrivateUse1;

struct Event {
  std::chrono::steady_clock::time_point recorded;
  bool timing = false;
  bool is_recorded = false;
};

class TfmbsGuardImpl final : public c10::impl::DeviceGuardImplInterface {
 public:
  c10::DeviceType type() const override { return kDevice; }

  c10::Device exchangeDevice(c10::Device device) const override {
    c10::Device old = getDevice();
    setDevice(device);
    return old;
  }
  c10::Device getDevice() const override { return {kDevice, current_device()}; }
  void setDevice(c10::Device device) const override {
    TORCH_CHECK(device.type() == kDevice, "tfmbs guard got a ", device.type(), " device");
    set_current_device(device.index());
  }
  void uncheckedSetDevice(c10::Device device) const noexcept override {
    try {
      set_current_device(device.index());
    } catch (...) {
    }
  }

  c10::Stream getStream(c10::Device device) const override { return default_stream(device); }
  c10::Stream getDefaultStream(c10::Device device) const override { return default_stream(device); }
  c10::Stream getStreamFromGlobalPool(c10::Device device, bool) const override {
    return default_stream(device);
  }
  c10::Stream getNewStream(c10::Device device, int) const override {
    static std::atomic<c10::StreamId> next{1};
    return c10::Stream(c10::Stream::UNSAFE, resolved(device), next++);
  }
  c10::Stream exchangeStream(c10::Stream stream) const override { return default_stream(stream.device()); }
  c10::DeviceIndex deviceCount() const noexcept override { return device_count(); }
  c10::DeviceCapability getDeviceCapability(c10::Device) const override { return {}; }

  void record(void** event, const c10::Stream&, const c10::DeviceIndex,
              const c10::EventFlag flag) const override {
    if (!*event) *event = new Event;
    auto* e = static_cast<Event*>(*event);
    e->recorded = std::chrono::steady_clock::now();
    e->timing = flag == c10::EventFlag::BACKEND_DEFAULT;
    e->is_recorded = true;
  }
  void destroyEvent(void* event, const c10::DeviceIndex) const noexcept override {
    delete static_cast<Event*>(event);
  }
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
  void synchronizeEvent(void*) const override {}
  void synchronizeDevice(const c10::DeviceIndex index) const override { check_device_index(index); }
  double elapsedTime(void* start, void* end, const c10::DeviceIndex) const override {
    auto* a = static_cast<Event*>(start);
    auto* b = static_cast<Event*>(end);
    TORCH_CHECK(a && b && a->is_recorded && b->is_recorded,
                "tfmbs: elapsed_time needs both events to be recorded first");
    TORCH_CHECK(a->timing && b->timing,
                "tfmbs: elapsed_time needs events created with enable_timing=True");
    return std::chrono::duration<double, std::milli>(b->recorded - a->recorded).count();
  }

 private:
  static c10::Device resolved(c10::Device device) {
    return {kDevice, resolve_device(device.has_index() ? device.index() : -1)};
  }
  static c10::Stream default_stream(c10::Device device) {
    return c10::Stream(c10::Stream::DEFAULT, resolved(device));
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, TfmbsGuardImpl);

}  // namespace
}  // namespace tfmbs
