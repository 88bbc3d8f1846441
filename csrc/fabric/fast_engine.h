// The fast engine: the reference engine's results and counters, computed
// with SIMD (AVX-512 VNNI > AVX2 > scalar, chosen at run time) over the
// FastFrame resident layout, multi-threaded over output rows.
//
// Results are bit-identical to reference_engine.h for every ISA and thread
// count (int paths: exact modulo 2^32, like the fabric's wrapping
// accumulators; fp32: the same 16-bank order). Counters are not simulated:
//   per row r, with N batch rows and K columns,
//     MACs(r) = sum_n #{d : w[r,d] != 0 and x[n,d] != 0}
//             = N * nnz(r) - sum_n #{d : w[r,d] != 0 and x[n,d] == 0},
//   nnz(r) precomputed at load; the second term is |w[r,:]| . zc, where
//   zc[d] = number of batch rows with x[n,d] == 0: the AVX-512 kernel adds
//   it in the same pass (one extra vpdpbusd per 64 columns, and only for
//   64-column groups that hold a zero activation); the other ISAs run a
//   separate SIMD pass, or look up each zero's weight when there are very
//   few (<= K/128 in the whole batch). Row r runs on pass r / G, tile (r % G) / 15, lane
//   r % 15, so that lane gets active_cycles += N*K, skips += N*K - MACs(r);
//   utilization = sum_r MACs(r); cycles from the formula in telemetry.h.
//   Overflow: a lane's int32 prefix sum can only wrap if sum_d |x[n,d]| >
//   2^31 - 1; for such batch rows (and only those) the engine replays the
//   reference's sequential accumulation per output row to find the flags.
//
// Speed (4096x4096, int8 activations, this 2-core Zen 5 VM, 2 threads,
// benchmarks/cpp/fabric_bench.cpp, best of runs on a quiet machine): batch 1
// ~75 us hot / ~110-130 us cold, batch 8 ~245 us hot and cold, batch 64
// ~1.37 ms. Decode stack (8 layers 4096->11008->4096, 90 MB of codes
// streamed from DRAM per token, batch 1): ~1.8-1.9 ms per token, ~1.1-1.2x
// its PT-5 roofline at the ~44 GB/s read bandwidth measured in the same run.
// Streaming at that rate needs the kernels' linear software prefetch far
// ahead of the read position (fast_engine_avx512.cpp).
#pragma once

#include <cstdint>

#include "fabric/fast_frame.h"
#include "fabric/telemetry.h"

namespace tfmbs::fabric {

class ThreadPool;

enum class EngineIsa : uint8_t { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const char* engine_isa_name(EngineIsa isa);
// Avx512 needs AVX-512 F, BW, VL, DQ and VNNI; Avx2 needs AVX2 and FMA.
bool engine_isa_supported(EngineIsa isa);
EngineIsa best_engine_isa();

struct FastEngineOptions {
  EngineIsa isa = best_engine_isa();
  // Threads per call (caller included), capped at the pool's size; 0 = all
  // of the pool's (the global pool has one per hardware core). 1 never
  // touches the pool. Small problems run on the calling thread anyway.
  int threads = 0;
  // nullptr: ThreadPool::global().
  ThreadPool* pool = nullptr;
};

class FastEngine {
 public:
  // Throws std::invalid_argument if the CPU lacks options.isa or threads < 0.
  explicit FastEngine(FastEngineOptions options = {});

  EngineIsa isa() const { return isa_; }
  int threads() const;
  void set_threads(int threads);  // 0 = all of the pool's

  // y[n*M + r] = sum_d W[r,d] * x[n*K + d] for n < N, r < M (int32,
  // wrapping). Scales are the caller's: y_real = y * x_scale[n] * w_scale.
  OpCounters tgemm_int8(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y) const;
  // x in {-1,0,1} (else FabricError(ErrPack) naming the element).
  OpCounters tgemm_ternary(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y) const;
  // fp32 activations, the 16-bank accumulation order of reference_engine.h.
  OpCounters tgemm_fp32(const FastFrame& w, const float* x, int64_t n, float* y) const;

  // Elementwise kernels on PT-5 frames, as reference::dot/add/mul.
  OpCounters dot(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, int64_t* result) const;
  OpCounters add(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) const;
  OpCounters mul(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) const;

 private:
  OpCounters run_int8(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y,
                      uint64_t act_bytes) const;
  ThreadPool& pool() const;

  EngineIsa isa_;
  int threads_;
  ThreadPool* pool_;
};

}  // namespace tfmbs::fabric
