#include "aten/native/HostKernel.h"

namespace tfmbs {

void count_host_kernel(const HostCall& call, const char* name, const char* overload,
                       OpLogScope& log) {
  device_telemetry(call.device()).add_host_op();
  if (!log.enabled()) return;
  log.record.op = *overload ? std::string(name) + "." + overload : std::string(name);
  log.record.shapes = call.describe_shapes();
  log.record.engine = "host";
  log.record.device = call.device();
  log.record.bytes = call.device_bytes();
}

}  // namespace tfmbs
