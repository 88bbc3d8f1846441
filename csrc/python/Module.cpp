// torch_tfmbs._C: the thin Python binding over the C++ backend.
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/profiler/combined_traceback.h>
#include <torch/csrc/utils/pybind.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "aten/CoreOps.h"
#include "aten/CpuFallback.h"
#include "aten/HostOps.h"
#include "aten/native/TernaryFrames.h"
#include "device/MemoryHistory.h"
#include "device/OpLog.h"
#include "device/PoolCapture.h"
#include "device/StreamWork.h"
#include "device/TfmbsAllocator.h"
#include "device/TfmbsDevices.h"
#include "python/LinearCall.h"

namespace py = pybind11;

// From torch/csrc/profiler/python/combined_traceback.h, which needs
// nlohmann/json (not in torch's wheel) for functions this file does not use.
namespace torch {
TORCH_API std::vector<pybind11::object> py_symbolize(std::vector<CapturedTraceback*>& to_symbolize);
TORCH_PYTHON_API void installCapturedTracebackPython();
}  // namespace torch

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

// Registers everything first, then reads the configuration: a bad TFMBS_*
// value raises here (Python turns it into a warning, so that `import torch`
// still works for CPU-only scripts) and again at every use of the device.
void init() {
  install_capturing_cpu_allocator();
  register_shallow_copy_override();
  route_composite_ops_to_cpu_kernels();
  if (const char* mode = std::getenv("TFMBS_FALLBACK")) {
    set_fallback_mode_from_env(mode, "TFMBS_FALLBACK");
  }
  init_devices();
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

// The pool's segments and blocks as plain data; torch_tfmbs/memory.py
// shapes them as torch.cuda.memory._snapshot() does.
py::list pool_segments(c10::DeviceIndex device) {
  auto& pool = device_pool(device);
  py::list segments;
  if (!pool.reserved()) return segments;
  const auto base = reinterpret_cast<uintptr_t>(pool.base());
  for (const fabric::SegmentInfo& info : pool.snapshot()) {
    py::list blocks;
    for (const fabric::BlockInfo& b : info.blocks) {
      py::dict block;
      block["address"] = base + b.offset;
      block["size"] = b.size;
      block["requested_size"] = b.requested;
      block["allocated"] = b.allocated;
      block["resident"] = b.kind == fabric::MemoryKind::Resident;
      blocks.append(block);
    }
    py::dict segment;
    segment["address"] = base + info.offset;
    segment["total_size"] = info.size;
    segment["segment_type"] = info.pool == fabric::kSmallPool ? "small" : "large";
    segment["blocks"] = blocks;
    segments.append(segment);
  }
  return segments;
}

// (event, address, size, time_us) of the pool's recorded history.
py::list pool_history(c10::DeviceIndex device) {
  auto& pool = device_pool(device);
  static const char* names[] = {"alloc", "free", "segment_alloc", "segment_free", "oom"};
  const uintptr_t base = pool.reserved() ? reinterpret_cast<uintptr_t>(pool.base()) : 0;
  const std::vector<fabric::PoolTraceEntry> entries = pool.history();
  // The contexts are the stacks MemoryHistory.cpp captured.
  std::vector<torch::CapturedTraceback*> stacks;
  for (const fabric::PoolTraceEntry& e : entries)
    if (e.context) stacks.push_back(const_cast<torch::CapturedTraceback*>(
                       static_cast<const torch::CapturedTraceback*>(e.context.get())));
  const std::vector<py::object> frames = torch::py_symbolize(stacks);
  py::list out;
  size_t next_frames = 0;
  for (const fabric::PoolTraceEntry& e : entries) {
    const bool oom = e.event == fabric::PoolEvent::Oom;
    py::object f = e.context ? frames[next_frames++] : py::list();
    out.append(py::make_tuple(names[static_cast<int>(e.event)], oom ? 0 : base + e.offset, e.size,
                              e.time_us, f));
  }
  return out;
}

py::dict counters_dict(const fabric::OpCounters& c) {
  py::dict d;
  d["cycles"] = c.cycles;
  d["compute_cycles"] = c.compute_cycles;
  d["burst_wait_cycles"] = c.burst_wait_cycles;
  d["utilization"] = c.utilization;
  py::list tiles;
  for (const auto& tile : c.tiles) {
    py::dict t;
    t["skips"] = std::vector<uint64_t>(tile.skips.begin(), tile.skips.end());
    t["active_cycles"] = std::vector<uint64_t>(tile.active_cycles.begin(), tile.active_cycles.end());
    t["overflow"] = tile.overflow;
    tiles.append(t);
  }
  d["tiles"] = tiles;
  return d;
}

py::dict telemetry_dict(c10::DeviceIndex device) {
  auto& telemetry = device_telemetry(resolve_device(device));
  fabric::TelemetrySnapshot snap = telemetry.snapshot();
  py::dict d;
  d["num_tiles"] = telemetry.num_tiles();
  d["last_op"] = counters_dict(snap.last_op);
  d["accumulated"] = counters_dict(snap.accumulated);
  const auto& h = snap.host;
  d["ops"] = h.ops;
  d["bytes_h2d"] = h.bytes_h2d;
  d["bytes_d2h"] = h.bytes_d2h;
  d["residency_hits"] = h.residency_hits;
  d["residency_misses"] = h.residency_misses;
  d["evictions"] = h.evictions;
  d["host_ops"] = h.host_ops;
  d["fallback_ops"] = h.fallback_ops;
  return d;
}

// Queued work may need the GIL (a memory-history stack): never wait for it
// while holding it.
void wait_without_gil(const std::function<void()>& wait) {
  if (!PyGILState_Check()) return wait();
  py::gil_scoped_release release;
  wait();
}

}  // namespace
}  // namespace tfmbs

PYBIND11_MODULE(_C, m) {
  using namespace tfmbs;
  set_blocking_wait(&wait_without_gil);
  m.def("_init", &init);
  bind_linear_call(m);
  m.def("await_streams", [] { await_current_streams(); });
  m.def("synchronize", [](int64_t index) { synchronize_streams(resolve_device(index)); });
  // torch.cuda._sleep's counterpart, for tests: the current stream of
  // `device` is busy for `ms` milliseconds.
  m.def("stream_sleep", [](int64_t index, double ms) {
    const c10::DeviceIndex device = resolve_device(index);
    const auto duration = std::chrono::duration<double, std::milli>(ms);
    if (queues_work(device, /*default_stream_too=*/true)) queue_work(device, [duration] { std::this_thread::sleep_for(duration); });
    else std::this_thread::sleep_for(duration);
  });
  m.def("in_bad_fork", &in_bad_fork);
  m.def("device_count", [] { return static_cast<int>(device_count()); });
  m.def("current_device", [] { return static_cast<int>(current_device()); });
  m.def("set_device", [](int64_t index) { set_current_device(index); });
  m.def("check_device", [](int64_t index) { return static_cast<int>(resolve_device(index)); });
  m.def("default_generator", [](int64_t index) {
    const at::Generator& gen =
        at::detail::getPrivateUse1Hooks().getDefaultGenerator(resolve_device(index));
    return py::reinterpret_steal<py::object>(THPGenerator_initDefaultGenerator(gen));
  });
  m.def("pool_info", [](int64_t index) { return pool_info(resolve_device(index)); });
  m.def("pool_segments", [](int64_t index) { return pool_segments(resolve_device(index)); });
  m.def("pool_history", [](int64_t index) { return pool_history(resolve_device(index)); });
  m.def("record_pool_history", [](int64_t index, size_t max_entries, const std::string& stacks) {
    TORCH_CHECK(stacks == "none" || stacks == "alloc" || stacks == "all",
                "record_pool_history: stacks must be 'none', 'alloc' or 'all', got '", stacks, "'");
    if (stacks != "none") torch::installCapturedTracebackPython();
    record_memory_history(resolve_device(index), max_entries,
                          stacks == "all"     ? HistoryStacks::All
                          : stacks == "alloc" ? HistoryStacks::Alloc
                                              : HistoryStacks::None);
  });
  m.def("fallback_stats", &fallback_stats);
  m.def("host_ops", &host_ops);
  m.def("reset_fallback_stats", &reset_fallback_stats);
  m.def("set_fallback_mode", [](const std::string& mode) {
    set_fallback_mode(parse_fallback_mode(mode, "fallback mode"));
  });
  m.def("fallback_mode", [] { return std::string(mode_name(fallback_mode())); });
  m.def("telemetry", [](int64_t index) { return telemetry_dict(resolve_device(index)); });
  m.def("reset_telemetry", [](int64_t index) { device_telemetry(resolve_device(index)).reset(); });
  m.def("fabric_config", [] {
    const auto& c = fabric_config();
    py::dict d;
    d["tiles"] = c.tiles;
    d["lanes_per_tile"] = c.lanes_per_tile;
    d["clock_mhz"] = c.clock_mhz;
    d["pool_bytes"] = c.pool_bytes;
    d["num_fabrics"] = c.num_fabrics;
    d["threads"] = c.threads;
    d["engine_isa"] = fabric::isa_name(fast_engine().isa());
    d["thread_pool"] = c.own_threads ? "own" : "shared";
    return d;
  });
  m.def("resident_frames", [](int64_t index) {
    const c10::DeviceIndex device = resolve_device(index);
    py::list frames;
    for (const ResidentFrameInfo& f : resident_frames()) {
      if (f.device != device) continue;
      py::dict d;
      d["packed_data_ptr"] = reinterpret_cast<uintptr_t>(f.packed_data);
      d["rows"] = f.rows;
      d["cols"] = f.cols;
      d["bytes"] = f.bytes;
      frames.append(d);
    }
    return frames;
  });
  m.def("profiler_start", [] { return op_log_start(); });
  m.def("profiler_stop", [](uint64_t session) {
    py::list rows;
    for (const OpRecord& r : op_log_stop(session)) {
      py::dict row = counters_dict(r.counters);
      row["op"] = r.op;
      row["shapes"] = r.shapes;
      row["engine"] = r.engine;
      row["device"] = r.device;
      row["bytes"] = r.bytes;
      row["wall_ns"] = r.wall_ns;
      row["engine_ns"] = r.engine_ns;
      rows.append(row);
    }
    return rows;
  });
}
