// The device view of torch.profiler: a Kineto child profiler that turns the
// op log's rows (device/OpLog.h: fabric and host-path kernels with their
// wall time and fabric counters) into device activities, as CUPTI's kernel
// records are for CUDA. torch.profiler asks for them with
// ProfilerActivity.PrivateUse1; each row becomes a kernel on the lane
// (device, stream) it ran on, linked to the innermost torch op that was
// open around it, so key_averages() charges its time to that op's device
// columns and the Chrome trace draws it on a device timeline.
#include <torch/csrc/profiler/standalone/privateuse1_profiler.h>

#include <libkineto.h>
#include <output_base.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "device/OpLog.h"

namespace tfmbs {
namespace {

using libkineto::ActivityType;

class DeviceProfilerSession final : public libkineto::IActivityProfilerSession {
 public:
  void start() override {
    session_ = op_log_start(/*all_threads=*/true);
    status_ = libkineto::TraceStatus::RECORDING;
  }

  void stop() override {
    if (session_ == 0) return;
    rows_ = op_log_stop(session_);
    session_ = 0;
    status_ = libkineto::TraceStatus::PROCESSING;
  }

  ~DeviceProfilerSession() override { stop(); }

  std::vector<std::string> errors() override { return {}; }

  // torch pushes the id of each op it records on the thread running it;
  // the op log reads the top when a kernel ends.
  void pushCorrelationId(uint64_t id) override { op_log_push_correlation(id); }
  void popCorrelationId() override { op_log_pop_correlation(); }

  void processTrace(libkineto::ActivityLogger& logger) override {
    processTrace(logger, [](int32_t) -> const libkineto::ITraceActivity* { return nullptr; }, 0, 0);
  }

  void processTrace(libkineto::ActivityLogger& logger, libkineto::getLinkedActivityCallback linked_op,
                    int64_t, int64_t) override {
    buffer_ = std::make_unique<libkineto::CpuTraceBuffer>();
    int64_t first = 0, last = 0;
    for (const OpRecord& row : rows_) {
      const int64_t end = row.start_ns + static_cast<int64_t>(row.wall_ns);
      first = first == 0 ? row.start_ns : std::min(first, row.start_ns);
      last = std::max(last, end);
      lanes_.insert({row.device, row.stream});
    }
    buffer_->span = libkineto::TraceSpan(first, last, "tfmbs");
    buffer_->gpuOpCount = static_cast<int>(rows_.size());
    for (const OpRecord& row : rows_) {
      buffer_->emplace_activity(buffer_->span, ActivityType::CONCURRENT_KERNEL, row.op);
      libkineto::GenericTraceActivity& kernel = *buffer_->activities.back();
      kernel.startTime = row.start_ns;
      kernel.endTime = row.start_ns + static_cast<int64_t>(row.wall_ns);
      kernel.id = static_cast<int32_t>(row.correlation);
      kernel.device = row.device;
      kernel.resource = static_cast<int32_t>(row.stream);
      kernel.linked = row.correlation != 0 ? linked_op(static_cast<int32_t>(row.correlation)) : nullptr;
      kernel.addMetadataQuoted("engine", row.engine);
      kernel.addMetadataQuoted("shapes", row.shapes);
      kernel.addMetadata("device bytes", row.bytes);
      kernel.addMetadata("stream", row.stream);
      if (row.engine != "host") {
        // The fabric's model of the kernel (telemetry.h).
        const fabric::OpCounters& c = row.counters;
        kernel.addMetadata("modeled cycles", c.cycles);
        kernel.addMetadata("MACs", c.utilization);
        kernel.addMetadata("zero skips", c.total_skips());
      }
      kernel.log(logger);
    }
    rows_.clear();
  }

  std::unique_ptr<libkineto::DeviceInfo> getDeviceInfo() override {
    return std::make_unique<libkineto::DeviceInfo>(libkineto::DeviceInfo{0, 0, "tfmbs", "tfmbs fabric"});
  }

  std::vector<libkineto::ResourceInfo> getResourceInfos() override {
    std::vector<libkineto::ResourceInfo> lanes;
    for (const auto& [device, stream] : lanes_)
      lanes.push_back({stream, stream, device, "tfmbs:" + std::to_string(device) + " stream " + std::to_string(stream)});
    return lanes;
  }

  std::unique_ptr<libkineto::CpuTraceBuffer> getTraceBuffer() override { return std::move(buffer_); }

 private:
  uint64_t session_ = 0;
  std::vector<OpRecord> rows_;
  std::set<std::pair<int64_t, int64_t>> lanes_;  // (device, stream)
  std::unique_ptr<libkineto::CpuTraceBuffer> buffer_;
};

class DeviceProfiler final : public libkineto::IActivityProfiler {
 public:
  const std::string& name() const override { return name_; }

  const std::set<ActivityType>& availableActivities() const override { return activities_; }

  std::unique_ptr<libkineto::IActivityProfilerSession> configure(const std::set<ActivityType>& activity_types,
                                                                 const libkineto::Config&) override {
    if (!activity_types.count(ActivityType::CONCURRENT_KERNEL)) return nullptr;
    return std::make_unique<DeviceProfilerSession>();
  }

  std::unique_ptr<libkineto::IActivityProfilerSession> configure(int64_t, int64_t,
                                                                 const std::set<ActivityType>& activity_types,
                                                                 const libkineto::Config& config) override {
    return configure(activity_types, config);
  }

 private:
  std::string name_{"tfmbs"};
  std::set<ActivityType> activities_{ActivityType::CONCURRENT_KERNEL};
};

REGISTER_PRIVATEUSE1_PROFILER(DeviceProfiler);

}  // namespace
}  // namespace tfmbs
