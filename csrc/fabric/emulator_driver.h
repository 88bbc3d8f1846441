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
//
// Residency (frames live in the pool but need not stay there; the policy is
// FrameResidency's, see frame_residency.h):
// - base_addr is a stable handle. It is the pool offset of the frame's
//   bytes when loaded; after an eviction and reload the bytes may sit
//   elsewhere in the pool and the driver translates (as a device MMU
//   would). A new frame whose pool offset is already some frame's handle
//   gets the next free 64-byte aligned address that still fits the pool.
// - A frame loaded (load_frame / load_weights flags) without PINNED is
//   evictable; a TFD's own PINNED bit does not change that. An evicted
//   frame's bytes are copied to the heap and its pool block is freed. A
//   frame a queued or running task uses is not evicted (submit keeps every
//   frame of its TFD in use until the task has run).
// - Each frame operand of a submitted TFD is a use: a residency hit if the
//   frame is in the pool, else a miss, and the frame is reloaded into the
//   pool at submit (which may evict others; if it still does not fit,
//   submit throws OutOfMemory naming the frame, and nothing is queued).
// - WRITE: no kernel here writes a frame (ADD/MUL results go to host memory,
//   KernelArgs::out), so frame contents never change after load. Eviction
//   nevertheless always copies the current bytes out (every frame is
//   treated as dirty), so an output-frame kernel would need nothing more.
// - Every driver on a pool adds its own pressure callback; the pool asks
//   them in creation order, so LRU order holds within a driver, not across
//   drivers. A driver never allocates from the pool or calls its
//   FrameResidency while holding its own lock (an eviction takes it).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "fabric/driver.h"
#include "fabric/fast_engine.h"
#include "fabric/frame_buffer.h"
#include "fabric/frame_residency.h"

namespace tfmbs::fabric {

class FabricPool;

class EmulatorDriver final : public FabricDriver {
 public:
  enum class Engine : uint8_t { Reference = 0, Fast = 1 };

  // config is validated (std::invalid_argument); `pool` must outlive the
  // driver, which adds a pressure callback to it (see Residency).
  // The fast engine uses config.threads threads per op.
  EmulatorDriver(const FabricConfig& config, FabricPool& pool, Engine engine = Engine::Fast);
  ~EmulatorDriver() override;  // runs every queued task first

  const FabricConfig& config() const override { return config_; }
  Engine engine() const { return engine_; }

  uint64_t load_frame(const void* packed, size_t bytes, uint32_t flags) override;
  uint64_t load_weights(const int8_t* trits, int64_t rows, int64_t cols, uint32_t flags) override;
  void unload(uint64_t base_addr) override;
  // Flags a frame was loaded with (FabricError(ErrAddr) if none is there).
  uint32_t frame_flags(uint64_t base_addr) const;
  // Whether the frame's bytes are in the pool now (false: evicted).
  bool is_resident(uint64_t base_addr) const;
  // A copy of the frame's current bytes, wherever they are: the packed
  // trits of load_frame, or a weight frame in the engine's layout.
  std::vector<uint8_t> frame_bytes(uint64_t base_addr) const;

  TaskId submit(const Tfd& tfd, const KernelArgs& args) override;
  void wait(TaskId id) override { queue_.wait(id); }
  bool is_done(TaskId id) const override { return queue_.is_done(id); }
  void wait_all() override { queue_.wait_all(); }

  TelemetrySnapshot read_counters() const override { return telemetry_.snapshot(); }
  void reset_counters() override { telemetry_.reset(); }
  // For the device layer's host-side counters (bytes moved, residency...).
  Telemetry& telemetry() { return telemetry_; }

 private:
  struct Storage;
  struct Frame;
  // A frame pinned against eviction until the last copy is released.
  using Pinned = std::shared_ptr<const Frame>;

  // The frame named `what`=base_addr (FabricError(ErrAddr) if none).
  std::shared_ptr<Frame> find(uint64_t base_addr, const char* what) const;
  // Names a just-loaded, resident frame; returns its handle.
  uint64_t add(std::shared_ptr<Frame> frame);
  // Keeps a frame in use for a task: a hit, or a miss that reloads it.
  Pinned use(const std::shared_ptr<Frame>& frame, const char* what, uint64_t addr);
  // The frame's bytes copied into `to` (nullptr: the heap).
  Storage copy(const Frame& frame, const Storage& from, FabricPool* to) const;
  // How residency_ evicts `frame`: its bytes to the heap, its block freed.
  FrameResidency::Evict evict_to_host(const std::shared_ptr<Frame>& frame);
  OpCounters run_elementwise(const Tfd& tfd, const Frame& a, const Frame& b, void* out) const;
  OpCounters run_tgemm(const Frame& w, const KernelArgs& args) const;

  FabricConfig config_;
  FabricPool& pool_;
  Engine engine_;
  FastEngine fast_;
  Telemetry telemetry_;
  mutable std::mutex mu_;  // frames_ and each frame's storage / host
  std::map<uint64_t, std::shared_ptr<Frame>> frames_;  // by handle (base_addr)
  FrameResidency residency_;  // after frames_: leaves the pool before they go
  TaskQueue queue_;  // last member: destroyed (drained) first
};

}  // namespace tfmbs::fabric
