// Glue the tfmbs kernels share (torch_openreg's native/Common.h): the
// device type, host views of device tensors, and the op-log record of a
// kernel call.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <string>
#include <tuple>
#include <utility>

#include "aten/CpuAlias.h"
#include "device/OpLog.h"
#include "device/PoolCapture.h"
#include "device/StreamWork.h"

namespace tfmbs {

constexpr auto kTfmbs = c10::DeviceType::PrivateUse1;

// A CPU tensor over the same memory (the pool is host memory), or `t`
// itself when it is not a tfmbs tensor.
inline at::Tensor host(const at::Tensor& t) {
  return t.defined() && t.device().type() == kTfmbs ? cpu_alias(t) : t;
}

// Appends one row to the op log (the profilers, device/OpLog.h) when the
// scope ends, if a profiler is recording; the wall time is the scope's.
class OpLogScope {
 public:
  OpLogScope() : enabled_(op_log_enabled()) {
    if (!enabled_) return;
    record.start_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
    start_ = std::chrono::steady_clock::now();
  }
  ~OpLogScope() {
    if (!enabled_ || record.op.empty()) return;
    record.wall_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count());
    const OpOrigin* origin = op_log_borrowed_origin();
    record.stream = origin ? origin->stream : current_stream_id(static_cast<c10::DeviceIndex>(record.device));
    record.correlation = op_log_current_correlation();
    op_log_append(std::move(record));
  }
  OpLogScope(const OpLogScope&) = delete;
  OpLogScope& operator=(const OpLogScope&) = delete;
  // Whether a profiler records (fill `record` only then).
  bool enabled() const { return enabled_; }
  // Runs the fabric engine's part of the op; while a profiler records, its
  // time goes to record.engine_ns.
  template <typename Fn>
  auto time_engine(Fn&& fn) {
    if (!enabled_) return fn();
    const auto start = std::chrono::steady_clock::now();
    auto result = fn();
    record.engine_ns += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
    return result;
  }
  OpRecord record;

 private:
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

inline at::Tensor on_device(const at::Tensor& cpu_result, c10::DeviceIndex device) {
  return adopt_or_copy(cpu_result, device);
}

template <typename... Tensors>
std::tuple<Tensors...> on_device(const std::tuple<Tensors...>& cpu_results, c10::DeviceIndex device) {
  return std::apply([&](const auto&... t) { return std::tuple<Tensors...>(adopt_or_copy(t, device)...); },
                    cpu_results);
}

// Runs `kernel` (PyTorch CPU kernels over host views of device tensors) so
// that what it allocates lands in `device`'s pool, and returns its result
// (a tensor or a tuple of tensors) as tfmbs tensors, adopted without a copy.
template <typename Kernel>
auto run_on_host(c10::DeviceIndex device, Kernel kernel) {
  auto cpu_results = [&] {
    PoolCapture capture(device);
    return kernel();
  }();
  return on_device(cpu_results, device);
}

}  // namespace tfmbs
