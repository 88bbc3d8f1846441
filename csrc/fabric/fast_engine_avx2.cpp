// AVX2 kernels of the fast engine: level Isa::Avx2 (cpu_features.h),
// compiled with its flags and called only when cpu_supports(Isa::Avx2), for
// CPUs below Isa::Avx512. The fp32 kernel is why that level needs FMA.
//
// Same layout and results as the AVX-512 ones: each 64-byte block is used
// as two 32-byte halves; vpmaddubsw(c, x) + vpmaddwd(.., 1) replaces
// vpdpbusd (no int16 saturation: |c * x| <= 256, a pair <= 512). The int8
// kernel counts zero hits in the same pass, as the AVX-512 one does.
#include <immintrin.h>

#include "fabric/fast_engine_kernels.h"

namespace tfmbs::fabric::fast_detail {
namespace {

inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// The vpmaddubsw products of a (row, batch row) pair are summed in int16 -
// each is at most 2 * 2 * 128 = 512 in magnitude, 8 per block, so 8 blocks
// reach at most 32768, and only as -32768 (every x = -128, every code 2),
// which int16 holds - and widened once per kInt16Blocks blocks with vpmaddwd.
// Z: the tile also counts its rows' zero hits (Int8Job), once the product
// is done, while the tile's codes are still in L1: it walks the list of
// 32-column slices that hold a zero activation (no branch per slice; with
// a few percent of zeros most 32-column slices have none), so the
// product's loop stays as it is. Zero count (u8) x |w| pairs are at most
// 2 * 255, so the 64 pairs of 64 slices stay below 32767 in int16.
// prefetch: as in fast_engine_avx512.cpp, the first pass over these rows
// (batch tile 0 of a row chunk) streams the codes from memory: fetch the
// lines kPrefetchBytes ahead of the read position in that linear stream.
inline constexpr int64_t kInt16Blocks = 8;

// Keeps an accumulator's update where it is written: left alone, GCC
// reassociates the chain of adds into a tree over all the block's products,
// which needs more than 16 ymm registers and spills them to the stack.
#define TFMBS_KEEP_IN_REGISTER(v) asm("" : "+x"(v))

template <int R>
inline __attribute__((always_inline)) void zero_hits_tile(const Int8Job& j, int64_t r0) {
  constexpr int64_t kInt16Slices = kInt16Blocks * 8;
  const __m256i one = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  __m256i zacc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) zacc[r] = _mm256_setzero_si256();
  for (int64_t s0 = 0; s0 < j.zero_slice_count; s0 += kInt16Slices) {
    const int64_t s1 = s0 + kInt16Slices < j.zero_slice_count ? s0 + kInt16Slices : j.zero_slice_count;
    __m256i zpart[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) zpart[r] = _mm256_setzero_si256();
    for (int64_t k = s0; k < s1; ++k) {
      // Slice s: columns 32s..32s+31 = block s / 8, code group (s / 2) % 4, half s % 2.
      const int64_t slice = j.zero_slices[k];
      const int64_t at = (slice / 8) * 64 + (slice % 2) * 32;
      const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(2 * ((slice / 2) % 4)));
      const __m256i zc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(j.zero_counts + slice * 32));
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(j.codes + (r0 + r) * j.row_bytes + at));
        // |w| = (~c) & 1 for the code c = w + 1 in {0, 1, 2}.
        const __m256i nz = _mm256_andnot_si256(_mm256_srl_epi16(v, shift), one);
        zpart[r] = _mm256_add_epi16(zpart[r], _mm256_maddubs_epi16(zc, nz));
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) zacc[r] = _mm256_add_epi32(zacc[r], _mm256_madd_epi16(zpart[r], ones16));
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) j.zero_hits[r0 + r] = static_cast<uint32_t>(hsum(zacc[r]));
}

template <int R, int NB, bool Z>
inline __attribute__((always_inline)) void int8_tile(const Int8Job& j, int64_t r0, int64_t n0, bool prefetch) {
  __m256i acc[R][NB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) acc[r][n] = _mm256_setzero_si256();
  const __m256i three = _mm256_set1_epi8(3), ones16 = _mm256_set1_epi16(1);
  for (int64_t b0 = 0; b0 < j.blocks; b0 += kInt16Blocks) {
    const int64_t b1 = b0 + kInt16Blocks < j.blocks ? b0 + kInt16Blocks : j.blocks;
    __m256i part[R][NB];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int n = 0; n < NB; ++n) part[r][n] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
      if (prefetch) {
        const uintptr_t ahead = reinterpret_cast<uintptr_t>(j.codes + r0 * j.row_bytes) + kPrefetchBytes;
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(ahead + (b * R + r) * 64), _MM_HINT_T2);
      }
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m256i v[R];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
          v[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(j.codes + (r0 + r) * j.row_bytes + b * 64 + h * 32));
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          const int64_t off = b * 256 + i * 64 + h * 32;
          __m256i xv[NB];
#pragma GCC unroll 16
          for (int n = 0; n < NB; ++n)
            xv[n] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(j.x + (n0 + n) * j.x_stride + off));
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            const __m256i q = _mm256_and_si256(_mm256_srli_epi16(v[r], 2 * i), three);
#pragma GCC unroll 16
            for (int n = 0; n < NB; ++n) {
              part[r][n] = _mm256_add_epi16(part[r][n], _mm256_maddubs_epi16(q, xv[n]));
              TFMBS_KEEP_IN_REGISTER(part[r][n]);
            }
          }
        }
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int n = 0; n < NB; ++n) acc[r][n] = _mm256_add_epi32(acc[r][n], _mm256_madd_epi16(part[r][n], ones16));
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) {
      const uint32_t s = static_cast<uint32_t>(hsum(acc[r][n]));
      j.y[(n0 + n) * j.m + r0 + r] = static_cast<int32_t>(s - static_cast<uint32_t>(j.x_sum[n0 + n]));
    }
  }
  if constexpr (Z) zero_hits_tile<R>(j, r0);
}

template <int NB, bool Z>
void int8_rows_nbz(const Int8Job& j, int64_t r0, int64_t r1, int64_t n0) {
  constexpr int R = NB == 1 ? 4 : 2;
  int64_t r = r0;
  const bool prefetch = n0 == 0;
  for (; r + R <= r1; r += R) int8_tile<R, NB, Z>(j, r, n0, prefetch);
  for (; r < r1; ++r) int8_tile<1, NB, Z>(j, r, n0, prefetch);
}

// The zero hits are counted once per row, with the first batch tile.
template <int NB>
void int8_rows_nb(const Int8Job& j, int64_t r0, int64_t r1, int64_t n0) {
  if (n0 == 0 && j.zero_counts != nullptr) int8_rows_nbz<NB, true>(j, r0, r1, n0);
  else int8_rows_nbz<NB, false>(j, r0, r1, n0);
}

// fp32: banks 0..7 in lo, 8..15 in hi. Masked-out lanes add +0.0 / subtract
// +0.0, which leaves a bank unchanged because a bank is never -0.0 (it
// starts at +0.0 and IEEE round-to-nearest sums give -0.0 only from -0.0
// operands), so the results equal the masked AVX-512 and scalar kernels.
template <int NB, bool kFma>
inline __attribute__((always_inline)) void fp32_tile(const Fp32Job& j, int64_t r, int64_t n0) {
  __m256 lo[NB], hi[NB];
#pragma GCC unroll 16
  for (int n = 0; n < NB; ++n) lo[n] = hi[n] = _mm256_setzero_ps();
  const __m256i three = _mm256_set1_epi32(3), two = _mm256_set1_epi32(2), zero = _mm256_setzero_si256();
  const __m256 code_to_weight = _mm256_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, 0, 0, 0, 0);
  const uint8_t* row = j.codes + r * j.row_bytes;
  // Columns in increasing order: block b, group i (bits 2i), slice g.
  for (int64_t b = 0; b < j.blocks; ++b) {
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      for (int g = 0; g < 4; ++g) {
        const int64_t off = b * 256 + i * 64 + g * 16;
        const __m256i c_lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + b * 64 + g * 16)));
        const __m256i c_hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + b * 64 + g * 16 + 8)));
        const __m256i q_lo = _mm256_and_si256(_mm256_srli_epi32(c_lo, 2 * i), three);
        const __m256i q_hi = _mm256_and_si256(_mm256_srli_epi32(c_hi, 2 * i), three);
        if constexpr (kFma) {
          const __m256 w_lo = _mm256_permutevar8x32_ps(code_to_weight, q_lo);
          const __m256 w_hi = _mm256_permutevar8x32_ps(code_to_weight, q_hi);
#pragma GCC unroll 16
          for (int n = 0; n < NB; ++n) {
            const float* x = j.x + (n0 + n) * j.x_stride + off;
            lo[n] = _mm256_fmadd_ps(w_lo, _mm256_loadu_ps(x), lo[n]);
            hi[n] = _mm256_fmadd_ps(w_hi, _mm256_loadu_ps(x + 8), hi[n]);
          }
        } else {
          const __m256 pos_lo = _mm256_castsi256_ps(_mm256_cmpeq_epi32(q_lo, two));
          const __m256 neg_lo = _mm256_castsi256_ps(_mm256_cmpeq_epi32(q_lo, zero));
          const __m256 pos_hi = _mm256_castsi256_ps(_mm256_cmpeq_epi32(q_hi, two));
          const __m256 neg_hi = _mm256_castsi256_ps(_mm256_cmpeq_epi32(q_hi, zero));
#pragma GCC unroll 16
          for (int n = 0; n < NB; ++n) {
            const float* x = j.x + (n0 + n) * j.x_stride + off;
            const __m256 xl = _mm256_loadu_ps(x), xh = _mm256_loadu_ps(x + 8);
            lo[n] = _mm256_sub_ps(_mm256_add_ps(lo[n], _mm256_and_ps(xl, pos_lo)), _mm256_and_ps(xl, neg_lo));
            hi[n] = _mm256_sub_ps(_mm256_add_ps(hi[n], _mm256_and_ps(xh, pos_hi)), _mm256_and_ps(xh, neg_hi));
          }
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int n = 0; n < NB; ++n) {
    alignas(32) float bank[16];
    _mm256_store_ps(bank, lo[n]);
    _mm256_store_ps(bank + 8, hi[n]);
    j.y[(n0 + n) * j.m + r] = reduce_fp_banks(bank);
  }
}

template <int NB>
void fp32_row(const Fp32Job& j, int64_t r, int64_t n0) {
  if (j.all_finite) fp32_tile<NB, true>(j, r, n0);
  else fp32_tile<NB, false>(j, r, n0);
}

}  // namespace

void int8_rows_avx2(const Int8Job& j, int64_t r0, int64_t r1) {
  // 16 ymm registers: 2 batch rows x 2 weight rows (or 1 x 4) keep the
  // int32 and int16 accumulators in registers.
  constexpr int kTile = 2;
  for (int64_t c0 = r0; c0 < r1; c0 += 64) {
    const int64_t c1 = c0 + 64 < r1 ? c0 + 64 : r1;
    for (int64_t n0 = 0; n0 < j.n; n0 += kTile) {
      switch (j.n - n0 < kTile ? j.n - n0 : kTile) {
        case 1: int8_rows_nb<1>(j, c0, c1, n0); break;
        default: int8_rows_nb<2>(j, c0, c1, n0); break;
      }
    }
  }
}

ActivationRow copy_activation_row_avx2(const int8_t* src, int64_t cols, int8_t* dst, uint8_t* counts) {
  // vpsadbw sums x + 128 (x ^ 0x80 as u8) per 8 bytes into u64 lanes.
  const __m256i bias = _mm256_set1_epi8(-128), zero = _mm256_setzero_si256();
  __m256i biased = zero, zeros = zero;
  int64_t d = 0;
  for (; d + 32 <= cols; d += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d), v);
    const __m256i is_zero = _mm256_cmpeq_epi8(v, zero);  // -1 where zero
    auto* c = reinterpret_cast<__m256i*>(counts + d);
    _mm256_storeu_si256(c, _mm256_sub_epi8(_mm256_loadu_si256(c), is_zero));
    zeros = _mm256_or_si256(zeros, is_zero);
    biased = _mm256_add_epi64(biased, _mm256_sad_epu8(_mm256_xor_si256(v, bias), zero));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), biased);
  const uint64_t vector_sum = lanes[0] + lanes[1] + lanes[2] + lanes[3] - 128 * static_cast<uint64_t>(d);
  const ActivationRow tail = copy_activation_row_scalar(src + d, cols - d, dst + d, counts + d);
  return {static_cast<int32_t>(static_cast<uint32_t>(vector_sum) + static_cast<uint32_t>(tail.sum)),
          tail.has_zero || !_mm256_testz_si256(zeros, zeros)};
}

void add_slot_counts_avx2(const uint8_t* table, int64_t slots, const ZeroColumn* columns, int64_t count,
                          uint16_t* part) {
  // 16 slots at a time in one accumulator over all the columns; the last
  // slots % 16 by the scalar kernel.
  int64_t at = 0;
  for (; at + 16 <= slots; at += 16) {
    auto* p = reinterpret_cast<__m256i*>(part + at);
    __m256i acc = _mm256_loadu_si256(p);
    for (int64_t i = 0; i < count; ++i) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(table + columns[i].d * slots + at));
      const __m256i rows = _mm256_set1_epi16(static_cast<short>(columns[i].rows));
      acc = _mm256_add_epi16(acc, _mm256_mullo_epi16(_mm256_cvtepu8_epi16(v), rows));
    }
    _mm256_storeu_si256(p, acc);
  }
  if (at == slots) return;
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* counts = table + columns[i].d * slots;
    const auto rows = static_cast<uint16_t>(columns[i].rows);
    for (int64_t s = at; s < slots; ++s) part[s] = static_cast<uint16_t>(part[s] + rows * counts[s]);
  }
}

void zero_hits_avx2(const ZeroCountJob& j, int64_t r0, int64_t r1) {
  const __m256i one = _mm256_set1_epi8(1);
  for (int64_t r = r0; r < r1; ++r) {
    uint64_t hits = 0;
    for (int64_t c = 0; c < j.chunks; ++c) {
      const uint8_t* zc = j.zero_counts + c * j.stride;
      __m256i acc = _mm256_setzero_si256();
      for (int64_t b = 0; b < j.blocks; ++b) {
        for (int h = 0; h < 2; ++h) {
          const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(j.codes + r * j.row_bytes + b * 64 + h * 32));
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) {
            const __m256i nz = _mm256_andnot_si256(_mm256_srli_epi16(v, 2 * i), one);  // |w|
            const __m256i z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zc + b * 256 + i * 64 + h * 32));
            acc = dot_u8s8(acc, z, nz);
          }
        }
      }
      hits += static_cast<uint32_t>(hsum(acc));
    }
    j.zero_hits[r] = hits;
  }
}

void fp32_rows_avx2(const Fp32Job& j, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t n0 = 0; n0 < j.n; n0 += 4) {
      switch (j.n - n0 < 4 ? j.n - n0 : 4) {
        case 1: fp32_row<1>(j, r, n0); break;
        case 2: fp32_row<2>(j, r, n0); break;
        case 3: fp32_row<3>(j, r, n0); break;
        default: fp32_row<4>(j, r, n0); break;
      }
    }
  }
}

}  // namespace tfmbs::fabric::fast_detail
