// The fast engine: the reference engine's results and counters, computed
// with SIMD (by default the best level this CPU runs, cpu_features.h) over
// the FastFrame resident layout, multi-threaded over output rows.
//
// Results are bit-identical to reference_engine.h for every ISA and thread
// count (int paths: exact modulo 2^32, like the fabric's wrapping
// accumulators; fp32: the same 16-bank order). Counters are not simulated:
//   per row r, with N batch rows and K columns,
//     MACs(r) = sum_n #{d : w[r,d] != 0 and x[n,d] != 0}
//             = N * nnz(r) - sum_n #{d : w[r,d] != 0 and x[n,d] == 0},
//   nnz(r) precomputed at load. The counters only need the second term
//   summed over the rows of each lane (class r mod G below): a frame with
//   slot counts (fast_frame.h) gives it as, per zero column d, zc[d] times
//   the column's nonzeros in each class - work per call in (zero columns) x
//   (classes), none per row - where zc[d] = number of batch rows with
//   x[n,d] == 0. Frames too small to keep slot counts get it per row as
//   |w[r,:]| . zc: the AVX2 and AVX-512 int8 kernels add it in the same pass
//   (one extra dot product per 64 (32) columns, only where a zero
//   activation is: AVX-512 visits 64-column groups, AVX2 32-column slices);
//   the scalar kernel and the fp32 path run a separate pass, or look up
//   each zero's weight when there are very few (<= K/128 in the whole
//   batch). Row r runs on pass r / G, tile (r % G) / 15, lane r % 15, so
//   that lane gets active_cycles += N*K, skips += N*K - MACs(r);
//   utilization = sum_r MACs(r); cycles from the formula in telemetry.h.
//   Overflow: a lane's int32 prefix sum can only wrap if sum_d |x[n,d]| >
//   2^31 - 1; for such batch rows (and only those) the engine replays the
//   reference's sequential accumulation per output row to find the flags.
//
// Speed: benchmarks/results/fabric.md (benchmarks/cpp/fabric_bench.cpp).
// Streaming weights at memory bandwidth needs the kernels' linear software
// prefetch far ahead of the read position (fast_engine_avx512.cpp).
#pragma once

#include <cstdint>
#include <functional>

#include "fabric/cpu_features.h"
#include "fabric/fast_frame.h"
#include "fabric/telemetry.h"

namespace tfmbs::fabric {

class ThreadPool;

// A caller's pass over finished output rows: called with [r0, r1) once y
// holds those rows' final values for every batch row, on the thread that
// computed them, while they are in its cache. Disjoint ranges that cover
// all rows, possibly at the same time on different threads.
using RowsDone = std::function<void(int64_t r0, int64_t r1)>;

struct FastEngineOptions {
  // Whose kernels run: any level for which cpu_supports(isa) holds.
  Isa isa = best_isa();
  // Threads per call (caller included), capped at the pool's size; 0 = all
  // of the pool's (the global pool has one per hardware core). 1 never
  // touches the pool. Small problems run on the calling thread anyway.
  int threads = 0;
  // nullptr: ThreadPool::global().
  ThreadPool* pool = nullptr;
  // Batch-1 int8 on a frame with PT-5 row blocks (fast_frame.h), with
  // Isa::Avx512 or Amx (or Scalar, its twin): the codes' kernel or the
  // lookup-table one over the PT-5 rows; both give the same bits. From DRAM
  // the PT-5 rows' 1.6 bits/weight win; from cache the codes' product,
  // which costs fewer instructions per weight. Adaptive reads the PT-5 rows
  // when more frame bytes (all engines' reads) went by since the frame's
  // last read than half the CPU's last-level cache holds.
  enum class Batch1 : uint8_t { Adaptive, Codes, Pt5 } batch1 = Batch1::Adaptive;
};

class FastEngine {
 public:
  // Throws std::invalid_argument if the CPU lacks options.isa or threads < 0.
  explicit FastEngine(FastEngineOptions options = {});

  Isa isa() const { return isa_; }
  int threads() const;
  void set_threads(int threads);  // 0 = all of the pool's

  // y[n*M + r] = sum_d W[r,d] * x[n*K + d] for n < N, r < M (int32,
  // wrapping). Scales are the caller's: y_real = y * x_scale[n] * w_scale.
  // done, if given, sees every output row once (see RowsDone).
  OpCounters tgemm_int8(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y,
                        const RowsDone* done = nullptr) const;
  // x in {-1,0,1} (else FabricError(ErrPack) naming the element).
  OpCounters tgemm_ternary(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y,
                           const RowsDone* done = nullptr) const;
  // fp32 activations, the 16-bank accumulation order of reference_engine.h.
  OpCounters tgemm_fp32(const FastFrame& w, const float* x, int64_t n, float* y,
                        const RowsDone* done = nullptr) const;

  // Elementwise kernels on PT-5 frames, as reference::dot/add/mul.
  OpCounters dot(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, int64_t* result) const;
  OpCounters add(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) const;
  OpCounters mul(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) const;

 private:
  OpCounters run_int8(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y, uint64_t act_bytes,
                      const RowsDone* done) const;
  ThreadPool& pool() const;

  Isa isa_;
  FastEngineOptions::Batch1 batch1_;
  int threads_;
  ThreadPool* pool_;
};

}  // namespace tfmbs::fabric
