// torch_tfmbs._C: the thin Python binding over the C++ backend.
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdlib>

#include "aten/CoreOps.h"
#include "aten/CpuFallback.h"
#include "device/PoolCapture.h"
#include "device/TfmbsAllocator.h"
#include "device/TfmbsDevices.h"

namespace py = pybind11;

namespace tfmbs {
namespace {

const char* mode_name(FallbackMode mode) {
  switch (mode) {
    case FallbackMode::Allow: return "allow";
    case FallbackMode::Warn: return "warn";
    case FallbackMode::Error: return "error";
  }
  return "?";
}

void init() {
  init_devices();
  if (const char* mode = std::getenv("TFMBS_FALLBACK")) {
    set_fallback_mode(parse_fallback_mode(mode, "TFMBS_FALLBACK"));
  }
  install_capturing_cpu_allocator();
  register_shallow_copy_override();
  route_composite_ops_to_cpu_kernels();
}

py::dict pool_info(c10::DeviceIndex device) {
  auto& pool = device_pool(resolve_device(device));
  auto stats = pool.stats();
  auto kind = [](const fabric::Stat& s) {
    py::dict d;
    d["current"] = s.current;
    d["peak"] = s.peak;
    return d;
  };
  py::dict info;
  info["capacity"] = pool.capacity();
  info["reserved"] = pool.reserved();
  info["transient_bytes"] = kind(stats.bytes_by_kind[0]);
  info["resident_bytes"] = kind(stats.bytes_by_kind[1]);
  return info;
}

}  // namespace
}  // namespace tfmbs

PYBIND11_MODULE(_C, m) {
  using namespace tfmbs;
  m.def("_init", &init);
  m.def("device_count", [] { return static_cast<int>(device_count()); });
  m.def("current_device", [] { return static_cast<int>(current_device()); });
  m.def("set_device", [](int index) { set_current_device(static_cast<c10::DeviceIndex>(index)); });
  m.def("check_device", [](int index) { return static_cast<int>(resolve_device(static_cast<c10::DeviceIndex>(index))); });
  m.def("default_generator", [](int index) {
    const at::Generator& gen = at::detail::getPrivateUse1Hooks().getDefaultGenerator(
        resolve_device(static_cast<c10::DeviceIndex>(index)));
    return py::reinterpret_steal<py::object>(THPGenerator_initDefaultGenerator(gen));
  });
  m.def("pool_info", [](int index) { return pool_info(static_cast<c10::DeviceIndex>(index)); });
  m.def("fallback_stats", &fallback_stats);
  m.def("reset_fallback_stats", &reset_fallback_stats);
  m.def("set_fallback_mode", [](const std::string& mode) {
    set_fallback_mode(parse_fallback_mode(mode, "fallback mode"));
  });
  m.def("fallback_mode", [] { return std::string(mode_name(fallback_mode())); });
  m.def("transfer_counters", [] {
    auto c = transfer_counters();
    return std::map<std::string, int64_t>{
        {"bytes_h2d", c.bytes_h2d}, {"bytes_d2h", c.bytes_d2h}, {"bytes_d2d", c.bytes_d2d}};
  });
  m.def("reset_transfer_counters", &reset_transfer_counters);
}
