// Telemetry of the emulated fabric: the counters the hardware keeps in its
// registers (cycles, utilization, per-lane skips and active cycles per tile,
// per-tile overflow flags, DMA burst wait), plus host-side counters the
// device layer adds (bytes moved, residency, host ops).
//
// THE CYCLE MODEL (the reference engine simulates it cycle by cycle; the fast
// engine derives the same numbers analytically; both must agree exactly):
//
//   L = 15 lanes per tile, T tiles in lock-step, G = 15*T lanes in all.
//
//   TGEMM  y[N,M] = x[N,K] * W[M,K]^T, W stored lane-major (lane_major_frame.h):
//     passes P = ceil(M / G); in pass p, tile t, lane l computes output row
//     r = p*G + t*15 + l if r < M (the lane "has a row"), else it idles.
//     For every pass p and every activation row n (in order p-major, n-minor):
//       1. burst:   the activation row is streamed into bank B over a 64-bit
//                   bus: W_b = ceil(act_bytes / 8) cycles, all lanes stalled.
//                   act_bytes = K (int8 activations), ceil(K/5) (ternary
//                   activations, PT-5 packed) or 4*K (fp32 activations).
//       2. compute: K cycles; in cycle d every tile reads its weight word d
//                   from bank A and activation d from bank B (broadcast to
//                   its 15 lanes).
//     Per lane that has a row, in each compute cycle:
//       active_cycles += 1;
//       if weight trit == 0 or activation == 0: skips += 1 (zero-skip, the
//         accumulator is clock-gated);
//       else: utilization += 1 (one MAC: add or subtract the activation).
//     Lanes without a row count nothing (no active cycle, no skip).
//     cycles = P * N * (K + W_b), burst_wait_cycles = P * N * W_b,
//     compute_cycles = P * N * K.
//   Accumulators are 32-bit two's complement and wrap; a wrap (a single add
//   whose exact result leaves [-2^31, 2^31-1]) sets the tile's overflow flag.
//   fp32 activations use fp32 lane accumulators (see reference_engine.h):
//   they never set overflow flags.
//
//   DOT / ADD / MUL on two frames a, b of n trits (elementwise kernels):
//     element i runs on global lane g = i mod G (tile g/15, lane g%15) in
//     step s = i / G. steps S = ceil(n / G). Each lane is active in a step if
//     it holds an element; skip if a_i == 0 or b_i == 0, else one MAC.
//     burst: both operands PT-5 packed, W_b = ceil(2*ceil(n/5) / 8).
//     cycles = S + W_b, burst_wait_cycles = W_b.
//
// Hand-checkable example (tests/cpp/test_reference_engine.cpp): T=1, N=1,
// K=3, int8 x = [5, 0, -2], W rows [1, 0, -1] (lane 0) and [0, 1, 1] (lane 1):
//   y = [5 + 2, -2] = [7, -2]; P=1, W_b=ceil(3/8)=1, cycles=4, burst=1,
//   lane 0: active 3, skips 1 (w=0 at d=1); lane 1: active 3, skips 2
//   (w=0 at d=0, x=0 at d=1); lanes 2..14: 0; utilization = 2 + 1 = 3.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace tfmbs::fabric {

inline constexpr int kLanesPerTile = 15;
// Bytes the DMA moves into a bank per fabric cycle (64-bit AXI burst).
inline constexpr uint64_t kBurstBytesPerCycle = 8;

// Burst wait (cycles) to stream `bytes` into a bank.
inline constexpr uint64_t burst_cycles(uint64_t bytes) {
  return (bytes + kBurstBytesPerCycle - 1) / kBurstBytesPerCycle;
}

struct TileCounters {
  std::array<uint64_t, kLanesPerTile> skips{};
  std::array<uint64_t, kLanesPerTile> active_cycles{};
  bool overflow = false;
  bool operator==(const TileCounters&) const = default;
};

// The counters of one fabric operation (or a sum of operations).
struct OpCounters {
  uint64_t cycles = 0;             // compute_cycles + burst_wait_cycles
  uint64_t compute_cycles = 0;
  uint64_t burst_wait_cycles = 0;
  uint64_t utilization = 0;        // lane-cycles that did a MAC
  std::vector<TileCounters> tiles;  // one entry per tile

  OpCounters() = default;
  explicit OpCounters(int num_tiles) : tiles(static_cast<size_t>(num_tiles)) {}
  bool operator==(const OpCounters&) const = default;

  // Adds `other` (same tile count, else std::invalid_argument naming both);
  // overflow flags are ORed (sticky, as in hardware).
  void add(const OpCounters& other);
  // Sums over tiles, per lane (what profile()'s "skips" reports).
  std::array<uint64_t, kLanesPerTile> lane_skips() const;
  std::array<uint64_t, kLanesPerTile> lane_active_cycles() const;
  uint64_t total_skips() const;
  uint64_t total_active_cycles() const;
  // skips / active lane-cycles (0 when nothing was active).
  double zero_skip_ratio() const;
  // utilization / (cycles * tiles * 15) (0 for 0 cycles).
  double utilization_ratio() const;
  // Human-readable dump, and a description of the first difference to
  // `other` (empty if equal) - for test failure messages.
  std::string to_string() const;
  std::string first_difference(const OpCounters& other) const;
};

// Host-side counters the device layer maintains next to the fabric's.
struct HostCounters {
  uint64_t ops = 0;  // fabric operations recorded
  uint64_t bytes_h2d = 0, bytes_d2h = 0;
  uint64_t residency_hits = 0, residency_misses = 0, evictions = 0;
  uint64_t host_ops = 0, fallback_ops = 0;
  bool operator==(const HostCounters&) const = default;
};

struct TelemetrySnapshot {
  OpCounters last_op;      // counters of the most recent recorded op
  OpCounters accumulated;  // sum since construction / reset()
  HostCounters host;
};

// A fabric instance's telemetry: thread-safe, so concurrent submitters and
// queue workers can record into it.
class Telemetry {
 public:
  explicit Telemetry(int num_tiles);
  int num_tiles() const { return num_tiles_; }

  void record(const OpCounters& op);
  void add_bytes_h2d(uint64_t n);
  void add_bytes_d2h(uint64_t n);
  void add_residency_hit();
  void add_residency_miss();
  void add_eviction();
  void add_host_op();
  void add_fallback_op();

  TelemetrySnapshot snapshot() const;
  void reset();

 private:
  int num_tiles_;
  mutable std::mutex mutex_;
  TelemetrySnapshot state_;
  // Counted once per ATen op on tfmbs: no lock on that path.
  std::atomic<uint64_t> host_ops_{0}, fallback_ops_{0};
};

}  // namespace tfmbs::fabric
