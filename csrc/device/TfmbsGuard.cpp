// Device guard for tfmbs: the current device and stream per thread, and
// events (device/StreamWork.h has what streams do).
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <chrono>
#include <memory>

#include "device/StreamWork.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

constexpr auto kDevice = c10::DeviceType::PrivateUse1;

// One record() of an event: the point in its stream's work it marks, and
// when the stream reached that point (set by the stream's worker when the
// point was still ahead at record time).
struct Recording {
  StreamMark mark;
  std::chrono::steady_clock::time_point reached;
};

struct Event {
  std::shared_ptr<Recording> recording;
};

std::chrono::steady_clock::time_point now() { return std::chrono::steady_clock::now(); }

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

  c10::Stream getStream(c10::Device device) const override {
    const c10::Device d = resolved(device);
    return stream_of(d, current_stream_id(d.index()));
  }
  c10::Stream getDefaultStream(c10::Device device) const override { return stream_of(resolved(device), 0); }
  c10::Stream getStreamFromGlobalPool(c10::Device device, bool) const override {
    return getNewStream(device, 0);
  }
  c10::Stream getNewStream(c10::Device device, int) const override {
    return stream_of(resolved(device), new_stream_id());
  }
  c10::Stream exchangeStream(c10::Stream stream) const override {
    const c10::Device d = resolved(stream.device());
    return stream_of(d, exchange_stream_id(d.index(), stream.id()));
  }
  c10::DeviceIndex deviceCount() const noexcept override { return device_count(); }
  c10::DeviceCapability getDeviceCapability(c10::Device) const override { return {}; }

  void record(void** event, const c10::Stream& stream, const c10::DeviceIndex,
              const c10::EventFlag flag) const override {
    if (!*event) *event = new Event;
    auto* e = static_cast<Event*>(*event);
    // A fresh recording: work queued for an earlier one still stamps that one.
    auto recording = std::make_shared<Recording>();
    const c10::DeviceIndex device = stream.device_index();
    recording->mark = mark_stream(device, stream.id());
    if (mark_reached(recording->mark)) {
      recording->reached = now();
    } else {
      recording->mark = queue_work_on(device, stream.id(), [r = recording] { r->reached = now(); });
    }
    e->recording = std::move(recording);
  }
  void destroyEvent(void* event, const c10::DeviceIndex) const noexcept override {
    delete static_cast<Event*>(event);
  }
  void block(void* event, const c10::Stream& stream) const override {
    const auto* e = static_cast<const Event*>(event);
    if (e && e->recording) stream_wait_mark(stream.device_index(), stream.id(), e->recording->mark);
  }
  bool queryEvent(void* event) const override {
    const auto* e = static_cast<const Event*>(event);
    return !e || !e->recording || mark_reached(e->recording->mark);
  }
  bool queryStream(const c10::Stream& stream) const override {
    return stream_idle(stream.device_index(), stream.id());
  }
  void synchronizeStream(const c10::Stream& stream) const override {
    synchronize_stream(stream.device_index(), stream.id());
  }
  void synchronizeEvent(void* event) const override {
    const auto* e = static_cast<const Event*>(event);
    if (e && e->recording) await_mark(e->recording->mark);
  }
  void synchronizeDevice(const c10::DeviceIndex index) const override {
    check_device_index(index);
    synchronize_streams(index);
  }
  double elapsedTime(void* start, void* end, const c10::DeviceIndex) const override {
    auto* a = static_cast<Event*>(start);
    auto* b = static_cast<Event*>(end);
    TORCH_CHECK(a && b && a->recording && b->recording,
                "tfmbs: elapsed_time needs both events to be recorded first");
    // torch.Event checks the timing flags and that both have completed first.
    return std::chrono::duration<double, std::milli>(b->recording->reached - a->recording->reached).count();
  }

 private:
  static c10::Device resolved(c10::Device device) {
    return {kDevice, resolve_device(device.has_index() ? device.index() : -1)};
  }
  static c10::Stream stream_of(c10::Device device, c10::StreamId id) {
    return id == 0 ? c10::Stream(c10::Stream::DEFAULT, device) : c10::Stream(c10::Stream::UNSAFE, device, id);
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, TfmbsGuardImpl);

}  // namespace
}  // namespace tfmbs
