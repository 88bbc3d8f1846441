// The per-op record torch_tfmbs.profiler() shows: while a profiler is
// active, each fabric op and each host (fallback) op appends one row.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "fabric/telemetry.h"

namespace tfmbs {

struct OpRecord {
  std::string op;       // e.g. "tfmbs::ternary_linear", "aten::add.Tensor"
  std::string shapes;   // e.g. "[8, 4096], [4096, 820]"
  std::string engine;   // "fabric-fast", "fabric-reference", "host"
  int device = 0;
  fabric::OpCounters counters;  // empty for host ops
  uint64_t bytes = 0;           // bytes the op read and wrote on the device
  uint64_t wall_ns = 0;
};

// True while at least one profiler is recording (cheap to test per op).
bool op_log_enabled();
// Starts a profiler session on the calling thread; returns its handle.
uint64_t op_log_start();
// Ends session `session`: the rows the thread that started it recorded
// between its start and now.
std::vector<OpRecord> op_log_stop(uint64_t session);
void op_log_append(OpRecord record);

}  // namespace tfmbs
