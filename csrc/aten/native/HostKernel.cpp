#include "aten/native/HostKernel.h"

namespace tfmbs {

void count_host_kernel(const HostCall& call, const char* name, const char* overload,
                       OpLogScope& log) {
  device_telemetry(call.device()).add_host_op();
  if (!log.enabled()) return;
  call.describe(log.record, *overload ? std::string(name) + "." + overload : std::string(name));
}

}  // namespace tfmbs
