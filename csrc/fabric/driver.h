// The driver seam: the fabric as the spec describes it to software - frames
// in fabric memory named by their fabric-local base address, TFDs
// submitted to an in-order queue, counter registers - as an abstract
// interface. The software emulator (emulator_driver.h) implements it on the
// reference or the fast engine; a driver for real hardware would implement
// the same calls with DMA, the TFD registers and the counter registers.
//
// What uses it today: the emulator's own tests, which hold the emulator to
// the spec's TFD semantics (validation, residency, asynchronous order). The
// torch layers do not go through it: the device's ternary op runs the
// engines synchronously on its calling thread (a queue hop per call would
// cost more than a small GEMV) over frames kept by the same residency
// policy the emulator uses (frame_residency.h) and the same kernel dispatch
// (tgemm.h). Putting real hardware under the device means routing that op
// through this interface.
//
// The model, after the spec: frames live in fabric memory and are named by
// their fabric-local base address (an offset into the instance's pool).
// Work is a TFD (its kernel id in exec_hints, its frame at base_addr) plus
// the operands below; submission is asynchronous and in order, results are
// complete when wait() returns, and an error in a task is raised by wait().
#pragma once

#include <cstdint>

#include "fabric/fabric_config.h"
#include "fabric/task_queue.h"  // TaskId
#include "fabric/telemetry.h"
#include "fabric/tfd.h"

namespace tfmbs::fabric {

enum class ActivationKind : uint8_t {
  Int8 = 0,     // x int8 in [-128, 127], y int32 (wrapping)
  Ternary = 1,  // x int8 in {-1, 0, 1}, y int32
  Fp32 = 2,     // x float, y float
};

// Operands of a submitted TFD, beside the frame the TFD names.
struct KernelArgs {
  // TGEMM: y[batch, rows] = x[batch, cols] * W^T, W the weight frame at
  // tfd.base_addr (loaded by load_weights). x and y are host-visible
  // memory the caller keeps alive until wait() returns.
  ActivationKind activation = ActivationKind::Int8;
  const void* x = nullptr;
  int64_t batch = 0;
  void* y = nullptr;
  // DOT / ADD / MUL: the second operand, a frame of the same packing and
  // frame_len at this fabric-local address (loaded by load_frame), and the
  // result: an int64_t for DOT; for ADD and MUL the result trits packed in
  // the TFD's packing (packed_frame_bytes(packing_fmt, frame_len) bytes).
  uint64_t b_addr = 0;
  void* out = nullptr;
};

class FabricDriver {
 public:
  virtual ~FabricDriver() = default;

  virtual const FabricConfig& config() const = 0;

  // Copies `bytes` of packed trits (PT-5 or T2B, as the TFDs that use it
  // will say) into fabric memory; returns the frame's base address.
  virtual uint64_t load_frame(const void* packed, size_t bytes, uint32_t flags) = 0;
  // Makes a ternary weight matrix trits[rows * cols] (row-major, {-1,0,1})
  // resident as a weight frame, in whatever layout the engine executes;
  // returns its base address. A TGEMM TFD names it with packing PT-5 and
  // frame_len = rows * cols.
  virtual uint64_t load_weights(const int8_t* trits, int64_t rows, int64_t cols, uint32_t flags) = 0;
  // Frees a frame. A task already submitted on it still completes.
  virtual void unload(uint64_t base_addr) = 0;

  // Validates the TFD against the pool and the configuration (an invalid
  // one throws FabricError at once, with the validator's status and
  // message) and queues it; returns the task id.
  virtual TaskId submit(const Tfd& tfd, const KernelArgs& args) = 0;
  // Blocks until the task ran; rethrows its error (FabricError, ...).
  virtual void wait(TaskId id) = 0;
  virtual bool is_done(TaskId id) const = 0;
  virtual void wait_all() = 0;

  // The counter registers: last op, accumulated since reset, host side.
  virtual TelemetrySnapshot read_counters() const = 0;
  virtual void reset_counters() = 0;
};

}  // namespace tfmbs::fabric
