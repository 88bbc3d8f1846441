#include "device/TfmbsDevices.h"

#include <c10/util/Exception.h>

#include <pthread.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "device/OpenMPTeam.h"
#include "device/StreamWork.h"
#include "fabric/fabric_config.h"

namespace tfmbs {
namespace {

// Leaked with everything in it: blocks may be freed during interpreter exit.
struct Devices {
  fabric::FabricConfig config;
  std::vector<fabric::FabricPool*> pools;
  std::vector<fabric::Telemetry*> telemetry;
  std::vector<fabric::FrameResidency*> residency;
};

std::atomic<Devices*> g_devices{nullptr};
thread_local c10::DeviceIndex t_current = 0;
std::atomic<bool> g_bad_fork{false};

void mark_child_after_fork() {
  Devices* devices = g_devices.load();
  if (!devices) return;
  if (stream_workers_started()) g_bad_fork = true;
  for (const auto* pool : devices->pools) {
    if (pool->reserved()) g_bad_fork = true;
  }
}

void create_devices() {
  fabric::FabricConfig config;
  try {
    config = fabric::FabricConfig::from_env();
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
  auto* devices = new Devices;
  devices->config = config;
  for (uint32_t i = 0; i < config.num_fabrics; ++i) {
    devices->pools.push_back(
        new fabric::FabricPool("tfmbs:" + std::to_string(i), config.pool_bytes));
    devices->telemetry.push_back(new fabric::Telemetry(static_cast<int>(config.tiles)));
    devices->residency.push_back(new fabric::FrameResidency(*devices->pools.back(), *devices->telemetry.back()));
  }
  g_devices.store(devices);
  pthread_atfork(nullptr, nullptr, &mark_child_after_fork);
}

}  // namespace

void init_devices() {
  // A failed first call leaves g_devices unset, so the error repeats at
  // every use instead of leaving a half-initialised backend.
  if (g_devices) return;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (!g_devices) create_devices();
}

c10::DeviceIndex device_count() noexcept {
  try {
    init_devices();
  } catch (...) {
    return 0;
  }
  return static_cast<c10::DeviceIndex>(g_devices.load()->pools.size());
}

void check_device_index(int64_t index) {
  init_devices();
  auto count = static_cast<int64_t>(g_devices.load()->pools.size());
  TORCH_CHECK_INDEX(index >= 0 && index < count, "tfmbs: invalid device index ",
                    index, ": there ",
                    count == 1 ? "is 1 tfmbs device" : "are " + std::to_string(count) + " tfmbs devices",
                    " (valid indices 0..", count - 1,
                    "; TFMBS_NUM_FABRICS sets the count)");
}

c10::DeviceIndex resolve_device(int64_t index) {
  if (index == -1) return current_device();
  check_device_index(index);
  return static_cast<c10::DeviceIndex>(index);
}

c10::DeviceIndex current_device() { return t_current; }

void set_current_device(int64_t index) {
  check_device_index(index);
  t_current = static_cast<c10::DeviceIndex>(index);
}

fabric::FabricPool& device_pool(c10::DeviceIndex index) {
  check_device_index(index);
  return *g_devices.load()->pools[index];
}

fabric::Telemetry& device_telemetry(c10::DeviceIndex index) {
  check_device_index(index);
  return *g_devices.load()->telemetry[index];
}

fabric::FrameResidency& device_residency(c10::DeviceIndex index) {
  check_device_index(index);
  return *g_devices.load()->residency[index];
}

const fabric::FabricConfig& fabric_config() {
  init_devices();
  return g_devices.load()->config;
}

fabric::FastEngine& fast_engine() {
  static fabric::FastEngine* engine = [] {
    if (!fabric_config().own_threads) fabric::ThreadPool::global().use_team(openmp_team());
    fabric::FastEngineOptions options;
    options.threads = static_cast<int>(fabric_config().threads);
    return new fabric::FastEngine(options);  // leaked: used until exit
  }();
  return *engine;
}

bool in_bad_fork() { return g_bad_fork.load(std::memory_order_relaxed); }

void check_not_forked() {
  TORCH_CHECK(!in_bad_fork(),
              "tfmbs: cannot use tfmbs tensors in a forked subprocess (the parent process "
              "already holds tfmbs memory, which the child only sees as a stale copy, or ran "
              "work on streams, whose workers the child does not have). To use "
              "tfmbs in worker processes, you must use the 'spawn' start method and create their "
              "tfmbs tensors there; a DataLoader should keep its dataset on the CPU (or use "
              "num_workers=0) and move each batch to tfmbs in the main process.");
}

c10::DeviceIndex device_of_pointer(const void* ptr) {
  Devices* devices = g_devices.load();
  if (!devices) return -1;
  for (size_t i = 0; i < devices->pools.size(); ++i) {
    if (devices->pools[i]->contains(ptr)) return static_cast<c10::DeviceIndex>(i);
  }
  return -1;
}

}  // namespace tfmbs
