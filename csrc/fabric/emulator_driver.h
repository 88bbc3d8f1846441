// The software fabric behind the driver seam: frames live in a FabricPool
// (the emulator's device memory), TFDs are validated and run in order on a
// TaskQueue by the reference engine (the definition, slow) or the fast
// engine (SIMD, same results and counters), and every op's counters go to
// a Telemetry.
//
// Supported kernels: NOP, DOT, ADD, MUL (frames of PT-5 or T2B trits) and
// TGEMM (a weight frame from load_weights). The other spec kernels (CONV2D,
// MAXPOOL, CONV3D, LSTM, ATTN) are rejected with ErrInvalid at submit.
// Rules checked at submit, beyond validate(): base_addr (and args.b_addr)
// must be the start of a loaded frame (ErrAddr) large enough for frame_len
// (ErrAddr); the TFD must carry READ (ErrInvalid); tile_mask must be 0 or
// all tiles (ErrInvalid: frames always run on every tile here); TGEMM
// needs packing PT-5 (ErrPack) and frame_len == rows * cols (ErrInvalid).
// Hint bits other than the kernel id are accepted and do not change the
// computation (the engines always zero-skip).
// PINNED / eviction are the residency layer's business (the pool's
// pressure handler); the driver records the flags of each frame.
#pragma once

#include <map>
#include <memory>
#include <mutex>

#include "fabric/driver.h"
#include "fabric/fast_engine.h"
#include "fabric/frame_buffer.h"

namespace tfmbs::fabric {

class FabricPool;

class EmulatorDriver final : public FabricDriver {
 public:
  enum class Engine : uint8_t { Reference = 0, Fast = 1 };

  // config is validated (std::invalid_argument); `pool` must outlive the
  // driver. The fast engine uses config.threads threads per op.
  EmulatorDriver(const FabricConfig& config, FabricPool& pool, Engine engine = Engine::Fast);
  ~EmulatorDriver() override;  // runs every queued task first

  const FabricConfig& config() const override { return config_; }
  Engine engine() const { return engine_; }

  uint64_t load_frame(const void* packed, size_t bytes, uint32_t flags) override;
  uint64_t load_weights(const int8_t* trits, int64_t rows, int64_t cols, uint32_t flags) override;
  void unload(uint64_t base_addr) override;
  // Flags a frame was loaded with (FabricError(ErrAddr) if none is there).
  uint32_t frame_flags(uint64_t base_addr) const;

  TaskId submit(const Tfd& tfd, const KernelArgs& args) override;
  void wait(TaskId id) override { queue_.wait(id); }
  bool is_done(TaskId id) const override { return queue_.is_done(id); }
  void wait_all() override { queue_.wait_all(); }

  TelemetrySnapshot read_counters() const override { return telemetry_.snapshot(); }
  void reset_counters() override { telemetry_.reset(); }
  // For the device layer's host-side counters (bytes moved, residency...).
  Telemetry& telemetry() { return telemetry_; }

 private:
  struct Frame;
  std::shared_ptr<const Frame> find(uint64_t base_addr, const char* what) const;
  uint64_t add(std::shared_ptr<Frame> frame, const uint8_t* data);
  OpCounters run_elementwise(const Tfd& tfd, const Frame& a, const Frame& b, void* out) const;
  OpCounters run_tgemm(const Frame& w, const KernelArgs& args) const;

  FabricConfig config_;
  FabricPool& pool_;
  Engine engine_;
  FastEngine fast_;
  Telemetry telemetry_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<Frame>> frames_;
  TaskQueue queue_;  // last member: destroyed (drained) before the frames
};

}  // namespace tfmbs::fabric
