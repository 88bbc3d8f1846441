// Fabric engine benchmark: the fast engine's ternary GEMV/GEMM against a
// dense int8 GEMV and an fp32 GEMV timed in the same run (straightforward
// AVX-512 VNNI / FMA kernels, same thread pool, same thread count), the
// roofline of reading the packed weights once at the memory bandwidth
// measured in the same run, and the reference engine's speed. Prints JSON.
// Median of repeats after warm-up. "Cold" rotates over frames totalling
// --cold-bytes (default 96 MiB; benchmarks/fabric.py passes 3x the CPU's
// last-level cache).
// Usage: fabric_bench [--quick] [--threads N] [--cold-bytes N] [--isa scalar|avx2|avx512|amx]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/fast_engine.h"
#include "fabric/reference_engine.h"
#include "fabric/thread_pool.h"

using namespace tfmbs::fabric;
using Clock = std::chrono::steady_clock;

namespace {

double median_seconds(const std::function<void()>& fn, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto a = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double min_seconds(const std::function<void()>& fn, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) fn();
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto a = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - a).count());
  }
  return best;
}

struct AlignedBytes {
  explicit AlignedBytes(size_t n) : size(n), p(static_cast<uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64))) {
    std::memset(p, 1, n);
  }
  ~AlignedBytes() { std::free(p); }
  size_t size;
  uint8_t* p;
};

bool has_avx512_vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
}

// --- memory read bandwidth: every byte of a large buffer read once --------
__attribute__((target("avx2"))) uint64_t read_sum_avx2(const uint8_t* p, size_t n) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i + 128 <= n; i += 128) {
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  return static_cast<uint64_t>(_mm256_extract_epi64(acc, 0));
}

// The same with a software prefetch 16 KiB ahead (as the engine's kernels
// do): on this VM it can read markedly faster than the plain loop, and the
// roofline should use the faster of the two.
__attribute__((target("avx2"))) uint64_t read_sum_prefetch_avx2(const uint8_t* p, size_t n) {
  __m256i acc = _mm256_setzero_si256();
  const auto base = reinterpret_cast<uintptr_t>(p);
  for (size_t i = 0; i + 128 <= n; i += 128) {
    _mm_prefetch(reinterpret_cast<const char*>(base + i + 16384), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(base + i + 16384 + 64), _MM_HINT_T0);
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    acc = _mm256_xor_si256(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  return static_cast<uint64_t>(_mm256_extract_epi64(acc, 0));
}

// --- dense int8 GEMV: y = W x, W int8 [M,K]; VNNI u8 x s8 with x + 128 ----
struct DenseInt8 {
  int64_t m, k;
  std::vector<int8_t> w;
  std::vector<int32_t> row_sum;  // 128 * sum(w) correction
};

__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dense_int8_rows_avx512(
    const DenseInt8& d, const uint8_t* xu, int64_t n, int32_t* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* wr = d.w.data() + r * d.k;
    for (int64_t b0 = 0; b0 < n; b0 += 4) {
      const int nb = static_cast<int>(std::min<int64_t>(4, n - b0));
      __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
      for (int64_t kk = 0; kk < d.k; kk += 64) {
        const __m512i wv = _mm512_loadu_si512(wr + kk);
        for (int b = 0; b < nb; ++b)
          acc[b] = _mm512_dpbusd_epi32(acc[b], _mm512_loadu_si512(xu + (b0 + b) * d.k + kk), wv);
      }
      for (int b = 0; b < nb; ++b) y[(b0 + b) * d.m + r] = _mm512_reduce_add_epi32(acc[b]) - d.row_sum[r];
    }
  }
}

void dense_int8_rows_scalar(const DenseInt8& d, const uint8_t* xu, int64_t n, int32_t* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t b = 0; b < n; ++b) {
      int32_t s = 0;
      for (int64_t kk = 0; kk < d.k; ++kk) s += d.w[r * d.k + kk] * xu[b * d.k + kk];
      y[b * d.m + r] = s - d.row_sum[r];
    }
}

// --- fp32 GEMV: y = W x, W fp32 [M,K] --------------------------------------
__attribute__((target("avx512f"))) void fp32_rows_avx512(const float* w, int64_t m, int64_t k, const float* x,
                                                          int64_t n, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t b0 = 0; b0 < n; b0 += 4) {
      const int nb = static_cast<int>(std::min<int64_t>(4, n - b0));
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t kk = 0; kk < k; kk += 16) {
        const __m512 wv = _mm512_loadu_ps(w + r * k + kk);
        for (int b = 0; b < nb; ++b) acc[b] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + (b0 + b) * k + kk), acc[b]);
      }
      for (int b = 0; b < nb; ++b) y[(b0 + b) * m + r] = _mm512_reduce_add_ps(acc[b]);
    }
  }
}

void fp32_rows_scalar(const float* w, int64_t m, int64_t k, const float* x, int64_t n, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t b = 0; b < n; ++b) {
      float s = 0;
      for (int64_t kk = 0; kk < k; ++kk) s += w[r * k + kk] * x[b * k + kk];
      y[b * m + r] = s;
    }
}

void parallel_rows(ThreadPool& pool, int threads, int64_t rows, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t chunk = 64;
  const int64_t tasks = (rows + chunk - 1) / chunk;
  pool.parallel_for(tasks, [&](int64_t i) { fn(i * chunk, std::min(rows, (i + 1) * chunk)); }, threads);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  double cold_bytes = 96.0 * (1 << 20);
  Isa isa = best_isa();
  int threads = ThreadPool::hardware_threads();
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--cold-bytes") && i + 1 < argc) cold_bytes = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--isa") && i + 1 < argc) {
      const std::string name = argv[++i];
      isa = name == "scalar" ? Isa::Scalar : name == "avx2" ? Isa::Avx2 : name == "avx512" ? Isa::Avx512 : Isa::Amx;
      if (name != isa_name(isa) || !cpu_supports(isa)) {
        std::fprintf(stderr, "fabric_bench: --isa %s is unknown or not supported by this CPU\n", name.c_str());
        return 2;
      }
    }
  }
  const int repeats = quick ? 5 : 21;
  ThreadPool& pool = ThreadPool::global();
  FastEngine engine(FastEngineOptions{isa, threads, &pool});
  const bool vnni = has_avx512_vnni();

  // Memory read bandwidth over 512 MiB, split over the same threads: the
  // best of the runs, not the median (the other core is often busy with
  // other work here, and a roofline should use what the memory can do).
  const size_t bw_bytes = size_t{512} << 20;
  AlignedBytes big(bw_bytes);
  volatile uint64_t sink = 0;
  auto read_pass = [&](bool prefetch) {
    const int64_t parts = 64;
    std::vector<uint64_t> partial(parts);
    pool.parallel_for(parts, [&](int64_t i) {
      const uint8_t* p = big.p + i * (bw_bytes / parts);
      partial[i] = prefetch ? read_sum_prefetch_avx2(p, bw_bytes / parts) : read_sum_avx2(p, bw_bytes / parts);
    }, threads);
    sink = sink + partial[0];
  };
  const double t_read_plain = min_seconds([&] { read_pass(false); }, 1, quick ? 5 : 9);
  const double t_read_prefetch = min_seconds([&] { read_pass(true); }, 1, quick ? 5 : 9);
  const double t_read = std::min(t_read_plain, t_read_prefetch);
  const double read_gbs = bw_bytes / t_read / 1e9;
  AlignedBytes dst(size_t{256} << 20);
  const double t_copy = median_seconds([&] { std::memcpy(dst.p, big.p, dst.size); }, 1, quick ? 3 : 5);
  const double copy_gbs = dst.size / t_copy / 1e9;

  const int64_t M = 4096, K = 4096;
  std::mt19937 rng(42);
  std::vector<int8_t> trits(static_cast<size_t>(M * K));
  for (auto& t : trits) t = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
  const auto load0 = Clock::now();
  const FastFrame frame = FastFrame::from_trits(trits.data(), M, K, 4);
  const double t_load = std::chrono::duration<double>(Clock::now() - load0).count();
  FastEngine engine1(FastEngineOptions{isa, 1, &pool});
  // "cold": enough distinct frames to overflow the last-level cache (a call
  // reads the codes or, at batch 1, maybe the PT-5 rows: the cold set is
  // counted in codes).
  const int cold_frames = std::max(2, static_cast<int>(std::ceil(cold_bytes / static_cast<double>(frame.codes_bytes()))));
  std::vector<FastFrame> cold;
  for (int i = 0; i < cold_frames; ++i) cold.push_back(FastFrame::from_trits(trits.data(), M, K, 4));

  DenseInt8 dense{M, K, std::vector<int8_t>(static_cast<size_t>(M * K)), std::vector<int32_t>(M)};
  for (auto& v : dense.w) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  for (int64_t r = 0; r < M; ++r) {
    int32_t s = 0;
    for (int64_t kk = 0; kk < K; ++kk) s += dense.w[r * K + kk];
    dense.row_sum[r] = 128 * s;
  }
  std::vector<float> wf(static_cast<size_t>(M * K));
  for (auto& v : wf) v = static_cast<float>(static_cast<int>(rng() % 3) - 1) * 0.01f;

  std::printf("{\n  \"machine\": {\"threads\": %d, \"isa\": \"%s\", \"read_bandwidth_gbs\": %.2f, \"read_plain_gbs\": %.2f, "
              "\"read_prefetch_gbs\": %.2f, \"memcpy_gbs\": %.2f},\n",
              threads, isa_name(engine.isa()), read_gbs, bw_bytes / t_read_plain / 1e9,
              bw_bytes / t_read_prefetch / 1e9, copy_gbs);
  std::printf("  \"note\": \"indicative: a 2-core VM whose other core may be busy\",\n");
  std::printf("  \"frame_load_4096x4096_ms\": %.2f,\n", t_load * 1e3);

  std::printf("  \"gemv_4096x4096\": [\n");
  const double packed_2bit = static_cast<double>(frame.codes_bytes());
  const double packed_pt5 = static_cast<double>(M) * ((K + 4) / 5);
  bool first = true;
  for (int64_t n : {1, 8, 64}) {
    std::vector<int8_t> x(static_cast<size_t>(n * K));
    for (auto& v : x) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    std::vector<int32_t> y(static_cast<size_t>(n * M));
    const double t_hot = median_seconds([&] { engine.tgemm_int8(frame, x.data(), n, y.data()); }, 3, repeats);
    const double t_hot1 = median_seconds([&] { engine1.tgemm_int8(frame, x.data(), n, y.data()); }, 2, repeats);
    int ci = 0;
    const double t_cold = median_seconds(
        [&] { engine.tgemm_int8(cold[ci++ % cold_frames], x.data(), n, y.data()); }, cold_frames, repeats);
    // Dense int8 baseline on the same activations.
    std::vector<uint8_t> xu(x.size());
    for (size_t i = 0; i < x.size(); ++i) xu[i] = static_cast<uint8_t>(x[i] + 128);
    std::vector<int32_t> yd(y.size());
    const double t_int8 = median_seconds(
        [&] {
          parallel_rows(pool, threads, M, [&](int64_t r0, int64_t r1) {
            if (vnni) dense_int8_rows_avx512(dense, xu.data(), n, yd.data(), r0, r1);
            else dense_int8_rows_scalar(dense, xu.data(), n, yd.data(), r0, r1);
          });
        },
        2, repeats);
    std::vector<float> xf(x.size()), yf(y.size());
    for (size_t i = 0; i < x.size(); ++i) xf[i] = x[i] * 0.01f;
    const double t_fp32 = median_seconds(
        [&] {
          parallel_rows(pool, threads, M, [&](int64_t r0, int64_t r1) {
            if (vnni) fp32_rows_avx512(wf.data(), M, K, xf.data(), n, yf.data(), r0, r1);
            else fp32_rows_scalar(wf.data(), M, K, xf.data(), n, yf.data(), r0, r1);
          });
        },
        2, quick ? 3 : 9);
    const double t_fast_fp = median_seconds([&] { engine.tgemm_fp32(frame, xf.data(), n, yf.data()); }, 2,
                                            quick ? 3 : 9);
    // Batch 1: each layout's kernel alone (the engine above picks one per call).
    std::string layouts;
    if (n == 1 && frame.pt5_rows() != nullptr) {
      using Batch1 = FastEngineOptions::Batch1;
      for (Batch1 mode : {Batch1::Codes, Batch1::Pt5}) {
        FastEngine forced(FastEngineOptions{isa, threads, &pool, mode});
        const double hot = median_seconds([&] { forced.tgemm_int8(frame, x.data(), n, y.data()); }, 3, repeats);
        const double cold_t = median_seconds(
            [&] { forced.tgemm_int8(cold[ci++ % cold_frames], x.data(), n, y.data()); }, cold_frames, repeats);
        const char* name = mode == Batch1::Codes ? "codes" : "pt5";
        layouts += "\"" + std::string(name) + "_hot_us\": " + std::to_string(hot * 1e6) + ", \"" + name +
                   "_cold_us\": " + std::to_string(cold_t * 1e6) + ", ";
      }
    }
    const double ops = 2.0 * M * K * n;
    const double roof_2bit = packed_2bit / (read_gbs * 1e9), roof_pt5 = packed_pt5 / (read_gbs * 1e9);
    std::printf(
        "%s    {\"batch\": %lld, %s\"ternary_int8_hot_us\": %.1f, \"ternary_int8_hot_1thread_us\": %.1f, \"ternary_int8_cold_us\": %.1f, \"gops_hot\": %.1f,\n"
        "     \"dense_int8_us\": %.1f, \"fp32_us\": %.1f, \"ternary_fp32_act_us\": %.1f,\n"
        "     \"speedup_vs_dense_int8\": %.2f, \"speedup_vs_fp32\": %.2f,\n"
        "     \"roofline_2bit_us\": %.1f, \"roofline_pt5_us\": %.1f, \"hot_over_roofline_2bit\": %.2f, \"cold_over_roofline_2bit\": %.2f}",
        first ? "" : ",\n", static_cast<long long>(n), layouts.c_str(), t_hot * 1e6, t_hot1 * 1e6, t_cold * 1e6, ops / t_hot / 1e9, t_int8 * 1e6,
        t_fp32 * 1e6, t_fast_fp * 1e6, t_int8 / t_hot, t_fp32 / t_hot, roof_2bit * 1e6, roof_pt5 * 1e6,
        t_hot / roof_2bit, t_cold / roof_2bit);
    first = false;
  }
  std::printf("\n  ],\n");

  // Reference engine: 1024x1024 GEMV, lane-cycles (MAC slots) per second.
  {
    const int64_t m = 1024, k = 1024;
    std::vector<int8_t> w(static_cast<size_t>(m * k)), x(static_cast<size_t>(k));
    for (auto& v : w) v = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
    for (auto& v : x) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    auto lm = LaneMajorFrame::from_trits(w.data(), m, k, 4);
    std::vector<int32_t> y(static_cast<size_t>(m));
    OpCounters c;
    const double t = median_seconds([&] { c = reference::tgemm_int8(lm, x.data(), 1, y.data()); }, 1, quick ? 1 : 3);
    std::printf("  \"reference_engine_1024x1024\": {\"seconds\": %.4f, \"lane_cycles_per_s\": %.3g, \"macs_per_s\": %.3g, \"fabric_cycles\": %llu}\n",
                t, static_cast<double>(c.total_active_cycles()) / t, static_cast<double>(c.utilization) / t,
                static_cast<unsigned long long>(c.cycles));
  }
  std::printf("}\n");
  return static_cast<int>(sink & 0);
}
