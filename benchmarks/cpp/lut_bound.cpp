// Compute bound of an exact lookup-table ternary kernel against VNNI, on
// one core of this CPU: the throughput of the instruction that carries
// each kernel's multiply-accumulates, with enough independent chains to
// hide latency and nothing else in the loop.
//   vnni:       vpdpbusd, 64 int8 MACs (4 per int32 lane, 16 lanes);
//   lut:        vpermw + vpaddw, a 32-entry int16 table of the partial sums
//               of 3 activations over their 27 trit patterns, looked up for
//               32 rows at once: 96 MACs per lookup, tables in registers;
//   lut_l1:     the same with each table loaded from L1, as a kernel must
//               (one table per activation triple and token).
// Prints JSON: G instructions/s and GMAC/s per kernel, and the ratios.
// Usage: lut_bound [--quick]
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "fabric/cpu_features.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kChains = 16;

#define TFMBS_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

// Each returns the seconds for `iters` rounds of kChains instructions.
TFMBS_AVX512 double vnni(int64_t iters) {
  __m512i acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm512_set1_epi32(k);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int k = 0; k < kChains; ++k) {
      acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
      asm volatile("" : "+v"(acc[k]));
    }
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

TFMBS_AVX512 double lut(int64_t iters) {
  __m512i acc[kChains], idx[kChains];
  for (int k = 0; k < kChains; ++k) {
    acc[k] = _mm512_setzero_si512();
    idx[k] = _mm512_set1_epi16(static_cast<int16_t>(k));
  }
  const __m512i table = _mm512_set1_epi16(7);
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int k = 0; k < kChains; ++k) {
      acc[k] = _mm512_add_epi16(acc[k], _mm512_permutexvar_epi16(idx[k], table));
      asm volatile("" : "+v"(acc[k]), "+v"(idx[k]));
    }
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

TFMBS_AVX512 double lut_l1(int64_t iters) {
  alignas(64) static int16_t tables[64 * 32];  // 4 KiB: 64 tables, in L1
  for (int i = 0; i < 64 * 32; ++i) tables[i] = static_cast<int16_t>(i);
  __m512i acc[kChains], idx[kChains];
  for (int k = 0; k < kChains; ++k) {
    acc[k] = _mm512_setzero_si512();
    idx[k] = _mm512_set1_epi16(static_cast<int16_t>(k));
  }
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int k = 0; k < kChains; ++k) {
      const __m512i table = _mm512_load_si512(tables + ((i * kChains + k) & 63) * 32);
      acc[k] = _mm512_add_epi16(acc[k], _mm512_permutexvar_epi16(idx[k], table));
      asm volatile("" : "+v"(acc[k]), "+v"(idx[k]));
    }
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of a few runs: the bound, not the typical speed of a shared core.
template <typename Kernel>
double best_rate(Kernel kernel, int64_t iters) {
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    const double s = kernel(iters);
    if (iters * kChains / s > best) best = iters * kChains / s;
  }
  return best;  // instructions (or lookups) per second
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tfmbs::fabric;
  if (!cpu_supports(Isa::Avx512)) {
    std::printf("{\"skipped\": \"this CPU does not run the Avx512 level\"}\n");
    return 0;
  }
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int64_t iters = quick ? 2'000'000 : 20'000'000;
  const double v = best_rate(vnni, iters), l = best_rate(lut, iters), l1 = best_rate(lut_l1, iters);
  std::printf(
      "{\"vnni_ginstr_s\": %.3f, \"vnni_gmac_s\": %.1f, \"lut_glookups_s\": %.3f, \"lut_gmac_s\": %.1f,"
      " \"lut_l1_glookups_s\": %.3f, \"lut_l1_gmac_s\": %.1f, \"lut_over_vnni\": %.3f, \"lut_l1_over_vnni\": %.3f}\n",
      v / 1e9, v * 64 / 1e9, l / 1e9, l * 96 / 1e9, l1 / 1e9, l1 * 96 / 1e9, l * 96 / (v * 64),
      l1 * 96 / (v * 64));
  return 0;
}
