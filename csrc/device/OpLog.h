// The per-op record of the profilers (torch_tfmbs.profiler(), and the
// device events torch.profiler shows for ProfilerActivity.PrivateUse1):
// while one is active, each fabric op and each host (fallback) op appends
// one row.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
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
  uint64_t engine_ns = 0;       // fabric ops: of wall_ns, the engine's run, with the output pass its threads run on finished rows (the rest is host glue)
  int64_t start_ns = 0;         // system clock, ns since the epoch (Kineto's time base)
  int64_t stream = 0;           // the device's current stream id
  uint64_t correlation = 0;     // the innermost torch.profiler op around it (0: none)
};

// True while at least one profiler is recording (cheap to test per op).
bool op_log_enabled();
// Starts a profiler session; returns its handle. It sees the rows of the
// calling thread, or of every thread if all_threads.
uint64_t op_log_start(bool all_threads = false);
// Ends session `session`: the rows it sees that were recorded between its
// start and now.
std::vector<OpRecord> op_log_stop(uint64_t session);
void op_log_append(OpRecord record);

// The calling thread's stack of torch.profiler correlation ids (one per open
// op); a row records the top.
void op_log_push_correlation(uint64_t id);
void op_log_pop_correlation();
uint64_t op_log_current_correlation();

// Who a row belongs to. Work a stream's worker runs for an op records its
// rows as the op's thread would have: same thread, correlation and stream.
struct OpOrigin {
  std::thread::id thread;
  uint64_t correlation = 0;
  int64_t stream = 0;
};
// The calling thread's origin, for work it queues on stream `stream`.
OpOrigin op_log_origin(int64_t stream);
// While it lives, the calling thread's rows belong to `origin`.
class OpOriginScope {
 public:
  explicit OpOriginScope(const OpOrigin& origin);
  ~OpOriginScope();
  OpOriginScope(const OpOriginScope&) = delete;
  OpOriginScope& operator=(const OpOriginScope&) = delete;

 private:
  const OpOrigin* previous_;
};
// The origin set by an OpOriginScope on this thread, or null.
const OpOrigin* op_log_borrowed_origin();

}  // namespace tfmbs
