// AVX-512 kernels of the fast engine: level Isa::Avx512 (cpu_features.h),
// compiled with its flags and called only when cpu_supports(Isa::Avx512)
// (fast_engine.cpp). This file is why that level needs VNNI (vpdpbusd) and
// VL (128-bit byte compares into masks).
//
// int8: per 64-byte weight block, (v >> 2i) & 3 gives 64 codes c = w + 1
// (u8), vpdpbusd accumulates c * x (s8) in 16 int32 lanes; sum(x) is
// subtracted at the end. A tile of R weight rows x NB batch rows keeps
// R*NB accumulators in registers, so each decoded weight vector serves NB
// activation rows and each activation load serves R weight rows.
#include <immintrin.h>

#include "fabric/fast_engine_kernels.h"

namespace tfmbs::fabric::fast_detail {
namespace {

// Horizontal sum with wrapping vector adds (GCC's _mm512_reduce_add_epi32
// ends in signed scalar adds, which are UB when the int32 sum wraps).
inline uint32_t hsum(__m512i v) {
  __m256i a = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i b = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  b = _mm_add_epi32(b, _mm_shuffle_epi32(b, 0x4e));
  b = _mm_add_epi32(b, _mm_shuffle_epi32(b, 0xb1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(b));
}

// S accumulators per (row, batch row), used round-robin over the four code
// groups: vpdpbusd has a latency of several cycles, so small tiles need
// more independent chains to reach its throughput.
// prefetch: this pass is the first over these rows' codes (the first batch
// tile of a row chunk), so they come from memory rather than L1/L2.
// In place (S = 4, one accumulator per group): group i's codes are used
// where they sit, v & (3 << 2i) = 4^i * c (at most 128, still a u8), one op
// instead of shift-and-mask; its accumulator holds 4^i times the group's
// sum, exactly while no lane wraps (kInPlaceMaxBlocks), and is shifted back
// before the groups are added.
inline constexpr int64_t kInPlaceMaxBlocks = 32767;  // a lane: blocks * 4 * 128 * 128 < 2^31

template <int R, int NB, int S, bool Z, bool InPlace = false>
inline __attribute__((always_inline)) void int8_tile(const Int8Job& j, int64_t r0, int64_t n0, bool prefetch) {
  static_assert(!InPlace || S == 4, "in place needs one accumulator per code group");
  __m512i acc[R][NB][S];
  __m512i zacc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    zacc[r] = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n)
#pragma GCC unroll 4
      for (int k = 0; k < S; ++k) acc[r][n][k] = _mm512_setzero_si512();
  }
  const __m512i three = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
  const uint8_t* rows[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) rows[r] = j.codes + (r0 + r) * j.row_bytes;
  const int8_t* xs[NB];
#pragma GCC unroll 16
  for (int n = 0; n < NB; ++n) xs[n] = j.x + (n0 + n) * j.x_stride;
  for (int64_t b = 0; b < j.blocks; ++b) {
    __m512i v[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) v[r] = _mm512_load_si512(rows[r] + b * 64);
    if (prefetch) {
      // The R rows of a tile are contiguous (R * row_bytes) and the rows of
      // a call are walked in order, so the codes are one linear stream:
      // fetch the R lines that lie kPrefetchBytes past the ones read now
      // (a prefetch never faults, so running past the frame is harmless).
      // A linear window keeps enough misses in flight for DRAM, where a
      // short per-row distance mostly re-requests lines the hardware
      // prefetcher already has.
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(rows[0]) + kPrefetchBytes + (b * R + r) * 64),
                     _MM_HINT_T2);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const int64_t off = b * 256 + i * 64;
      __m512i xv[NB];
#pragma GCC unroll 16
      for (int n = 0; n < NB; ++n) xv[n] = _mm512_loadu_si512(xs[n] + off);
      bool has_zero = false;
      __m512i zc = _mm512_setzero_si512();
      if constexpr (Z) {
        has_zero = j.group_has_zero[b * 4 + i] != 0;
        if (has_zero) zc = _mm512_loadu_si512(j.zero_counts + off);
      }
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512i q = InPlace ? _mm512_and_si512(v[r], _mm512_set1_epi8(static_cast<char>(3 << (2 * i))))
                                  : _mm512_and_si512(_mm512_srli_epi16(v[r], 2 * i), three);
#pragma GCC unroll 16
        for (int n = 0; n < NB; ++n) acc[r][n][i % S] = _mm512_dpbusd_epi32(acc[r][n][i % S], q, xv[n]);
        if constexpr (Z) {
          // |w| = (~c) & 1 for the code c = w + 1, times the zero count.
          if (has_zero) {
            const __m512i c = InPlace ? _mm512_srli_epi16(v[r], 2 * i) : q;
            zacc[r] = _mm512_dpbusd_epi32(zacc[r], zc, _mm512_andnot_si512(c, one));
          }
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) {
      __m512i total = acc[r][n][0];
#pragma GCC unroll 4
      for (int k = 1; k < S; ++k)
        total = _mm512_add_epi32(total, InPlace ? _mm512_srai_epi32(acc[r][n][k], 2 * k) : acc[r][n][k]);
      j.y[(n0 + n) * j.m + r0 + r] = static_cast<int32_t>(hsum(total) - static_cast<uint32_t>(j.x_sum[n0 + n]));
    }
    if constexpr (Z) j.zero_hits[r0 + r] = hsum(zacc[r]);
  }
}

template <int NB, bool Z, bool InPlace>
void int8_rows_nbzp(const Int8Job& j, int64_t r0, int64_t r1, int64_t n0) {
  constexpr int R = 4;
  constexpr int S = NB == 1 ? 4 : (NB == 2 ? 2 : 1);
  int64_t r = r0;
  const bool prefetch = n0 == 0;
  for (; r + R <= r1; r += R) int8_tile<R, NB, S, Z, InPlace && S == 4>(j, r, n0, prefetch);
  for (; r < r1; ++r) int8_tile<1, NB, 4, Z, InPlace>(j, r, n0, prefetch);
}

// Batch 1 (four accumulators per row anyway) decodes in place when it can.
template <int NB, bool Z>
void int8_rows_nbz(const Int8Job& j, int64_t r0, int64_t r1, int64_t n0) {
  if constexpr (NB == 1) {
    if (j.blocks <= kInPlaceMaxBlocks) return int8_rows_nbzp<NB, Z, true>(j, r0, r1, n0);
  }
  int8_rows_nbzp<NB, Z, false>(j, r0, r1, n0);
}

// The zero hits are counted once per row, with the first batch tile.
template <int NB>
void int8_rows_nb(const Int8Job& j, int64_t r0, int64_t r1, int64_t n0) {
  if (n0 == 0 && j.zero_counts != nullptr) int8_rows_nbz<NB, true>(j, r0, r1, n0);
  else int8_rows_nbz<NB, false>(j, r0, r1, n0);
}

template <int R>
inline __attribute__((always_inline)) void zero_tile(const ZeroCountJob& j, int64_t r0) {
  const __m512i one = _mm512_set1_epi8(1);
  uint64_t hits[R] = {};
  for (int64_t c = 0; c < j.chunks; ++c) {
    const uint8_t* zc = j.zero_counts + c * j.stride;
    __m512i acc[R];
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (int64_t b = 0; b < j.blocks; ++b) {
      __m512i v[R];
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) v[r] = _mm512_load_si512(j.codes + (r0 + r) * j.row_bytes + b * 64);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m512i z = _mm512_loadu_si512(zc + b * 256 + i * 64);
        #pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          // |w| = (~c) & 1 for the code c = w + 1 in {0, 1, 2}.
          const __m512i nz = _mm512_andnot_si512(_mm512_srli_epi16(v[r], 2 * i), one);
          acc[r] = _mm512_dpbusd_epi32(acc[r], z, nz);
        }
      }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) hits[r] += hsum(acc[r]);
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) j.zero_hits[r0 + r] = hits[r];
}

// fp32: zmm lane k of the accumulator is bank k (column % 16). Masked path:
// each 16 columns add (w=+1) or subtract (w=-1) x under masks, zeros
// skipped. FMA path (all activations finite, see Fp32Job): acc = fma(w, x,
// acc) with w in {-1,0,1} as floats - the same bits, half the instructions.
template <int R, int NB, bool kFma>
inline __attribute__((always_inline)) void fp32_tile(const Fp32Job& j, int64_t r0, int64_t n0) {
  __m512 acc[R][NB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) acc[r][n] = _mm512_setzero_ps();
  const __m128i three = _mm_set1_epi8(3), two = _mm_set1_epi8(2), zero = _mm_setzero_si128();
  const __m512 code_to_weight = _mm512_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  // Columns in increasing order (each bank sees its steps in order d):
  // block b, group i (bits 2i), then 16-column slices g of that group.
  for (int64_t b = 0; b < j.blocks; ++b) {
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      for (int g = 0; g < 4; ++g) {
        const int64_t off = b * 256 + i * 64 + g * 16;
        __m512 xv[NB];
        __mmask16 xnz[NB];
#pragma GCC unroll 16
        for (int n = 0; n < NB; ++n) {
          xv[n] = _mm512_loadu_ps(j.x + (n0 + n) * j.x_stride + off);
          // zero-skip: x == 0.0 (either sign) never touches the bank.
          if constexpr (!kFma) xnz[n] = _mm512_cmp_ps_mask(xv[n], _mm512_setzero_ps(), _CMP_NEQ_UQ);
        }
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const __m128i v =
              _mm_load_si128(reinterpret_cast<const __m128i*>(j.codes + (r0 + r) * j.row_bytes + b * 64 + g * 16));
          const __m128i q = _mm_and_si128(_mm_srli_epi16(v, 2 * i), three);
          if constexpr (kFma) {
            const __m512 wf = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(q), code_to_weight);
#pragma GCC unroll 16
            for (int n = 0; n < NB; ++n) acc[r][n] = _mm512_fmadd_ps(wf, xv[n], acc[r][n]);
          } else {
            const __mmask16 pos = _mm_cmpeq_epi8_mask(q, two), neg = _mm_cmpeq_epi8_mask(q, zero);
#pragma GCC unroll 16
            for (int n = 0; n < NB; ++n) {
              acc[r][n] = _mm512_mask_add_ps(acc[r][n], pos & xnz[n], acc[r][n], xv[n]);
              acc[r][n] = _mm512_mask_sub_ps(acc[r][n], neg & xnz[n], acc[r][n], xv[n]);
            }
          }
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) {
      alignas(64) float bank[16];
      _mm512_store_ps(bank, acc[r][n]);
      j.y[(n0 + n) * j.m + r0 + r] = reduce_fp_banks(bank);
    }
  }
}

template <int NB>
void fp32_rows_nb(const Fp32Job& j, int64_t r0, int64_t r1, int64_t n0) {
  // Enough independent accumulators to hide the add latency.
  constexpr int R = NB == 1 ? 8 : (NB == 2 ? 4 : 2);
  int64_t r = r0;
  if (j.all_finite) {
    for (; r + R <= r1; r += R) fp32_tile<R, NB, true>(j, r, n0);
    for (; r < r1; ++r) fp32_tile<1, NB, true>(j, r, n0);
  } else {
    for (; r + R <= r1; r += R) fp32_tile<R, NB, false>(j, r, n0);
    for (; r < r1; ++r) fp32_tile<1, NB, false>(j, r, n0);
  }
}

}  // namespace

void int8_rows_avx512(const Int8Job& j, int64_t r0, int64_t r1) {
  // Row chunks of 64 (16 KiB of codes at K = 4096) stay in L1/L2 while every
  // batch tile streams over them.
  for (int64_t c0 = r0; c0 < r1; c0 += 64) {
    const int64_t c1 = c0 + 64 < r1 ? c0 + 64 : r1;
    // 4 weight rows x 4 batch rows = 16 accumulators: each decoded code
    // vector feeds 4 vpdpbusd and each activation load 4, within the 32
    // vector registers.
    constexpr int64_t kTile = 4;
    for (int64_t n0 = 0; n0 < j.n; n0 += kTile) {
      switch (j.n - n0 < kTile ? j.n - n0 : kTile) {
        case 1: int8_rows_nb<1>(j, c0, c1, n0); break;
        case 2: int8_rows_nb<2>(j, c0, c1, n0); break;
        case 3: int8_rows_nb<3>(j, c0, c1, n0); break;
        default: int8_rows_nb<4>(j, c0, c1, n0); break;
      }
    }
  }
}

ActivationRow copy_activation_row_avx512(const int8_t* src, int64_t cols, int8_t* dst, uint8_t* counts) {
  // vpsadbw sums x + 128 (x ^ 0x80 as u8) per 8 bytes into u64 lanes; the
  // tail's masked-off lanes load as 0 and add 128 each, taken off below.
  const __m512i bias = _mm512_set1_epi8(-128), zero = _mm512_setzero_si512(), one = _mm512_set1_epi8(1);
  __m512i biased = zero;
  __mmask64 zeros = 0;
  int64_t d = 0;
  for (; d < cols; d += 64) {
    const __mmask64 in = cols - d >= 64 ? ~__mmask64{0} : (__mmask64{1} << (cols - d)) - 1;
    const __m512i v = _mm512_maskz_loadu_epi8(in, src + d);
    _mm512_mask_storeu_epi8(dst + d, in, v);
    const __mmask64 is_zero = _mm512_mask_cmpeq_epi8_mask(in, v, zero);
    const __m512i c = _mm512_maskz_loadu_epi8(in, counts + d);
    _mm512_mask_storeu_epi8(counts + d, in, _mm512_mask_add_epi8(c, is_zero, c, one));
    zeros |= is_zero;
    biased = _mm512_add_epi64(biased, _mm512_sad_epu8(_mm512_xor_si512(v, bias), zero));
  }
  const uint64_t sum = static_cast<uint64_t>(_mm512_reduce_add_epi64(biased)) - 128 * static_cast<uint64_t>(d);
  return {static_cast<int32_t>(static_cast<uint32_t>(sum)), zeros != 0};
}

void add_slot_counts_avx512(const uint8_t* table, int64_t slots, const ZeroColumn* columns, int64_t count,
                            uint16_t* part) {
  // 64 slots at a time in two u16 accumulators over all the columns; the
  // columns' loads are independent, so their cache misses overlap.
  for (int64_t at = 0; at < slots; at += 64) {
    const __mmask64 in = slots - at >= 64 ? ~__mmask64{0} : (__mmask64{1} << (slots - at)) - 1;
    const auto lo_in = static_cast<__mmask32>(in), hi_in = static_cast<__mmask32>(in >> 32);
    __m512i lo = _mm512_maskz_loadu_epi16(lo_in, part + at), hi = _mm512_maskz_loadu_epi16(hi_in, part + at + 32);
    for (int64_t i = 0; i < count; ++i) {
      const __m512i v = _mm512_maskz_loadu_epi8(in, table + columns[i].d * slots + at);
      const __m512i rows = _mm512_set1_epi16(static_cast<short>(columns[i].rows));
      lo = _mm512_add_epi16(lo, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(v)), rows));
      hi = _mm512_add_epi16(hi, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(v, 1)), rows));
    }
    _mm512_mask_storeu_epi16(part + at, lo_in, lo);
    _mm512_mask_storeu_epi16(part + at + 32, hi_in, hi);
  }
}

void zero_hits_avx512(const ZeroCountJob& j, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) zero_tile<4>(j, r);
  for (; r < r1; ++r) zero_tile<1>(j, r);
}

void fp32_rows_avx512(const Fp32Job& j, int64_t r0, int64_t r1) {
  for (int64_t c0 = r0; c0 < r1; c0 += 64) {
    const int64_t c1 = c0 + 64 < r1 ? c0 + 64 : r1;
    for (int64_t n0 = 0; n0 < j.n; n0 += kBatchTile) {
      const int64_t nb = j.n - n0 < kBatchTile ? j.n - n0 : kBatchTile;
      switch (nb) {
        case 1: fp32_rows_nb<1>(j, c0, c1, n0); break;
        case 2: fp32_rows_nb<2>(j, c0, c1, n0); break;
        case 3: fp32_rows_nb<3>(j, c0, c1, n0); break;
        case 4: fp32_rows_nb<4>(j, c0, c1, n0); break;
        case 5: fp32_rows_nb<5>(j, c0, c1, n0); break;
        case 6: fp32_rows_nb<6>(j, c0, c1, n0); break;
        case 7: fp32_rows_nb<7>(j, c0, c1, n0); break;
        default: fp32_rows_nb<8>(j, c0, c1, n0); break;
      }
    }
  }
}

}  // namespace tfmbs::fabric::fast_detail
