// AMX kernel of the fast engine: level Isa::Amx (cpu_features.h), compiled
// with its flags and called only when cpu_supports(Isa::Amx)
// (fast_engine.cpp). This file is why that level needs AMX-TILE, AMX-INT8
// and GFNI.
//
// int8, batches of kAmxMinBatch rows or more: tdpbusd multiplies a 16 x 64
// u8 tile A by a 64 x 16 s8 tile B (stored as 16 rows of 16 groups of 4
// consecutive k) into a 16 x 16 int32 tile C, with wrapping adds, as
// vpdpbusd does. Here:
//  * A = 16 weight rows x 64 columns of codes c = w + 1, decoded from the
//    frame ((block >> 2i) & 3 as one vgf2p8affineqb) into an L1 buffer,
//    since the tile unit loads only from memory. A block of 256 columns is
//    decoded one block ahead of the tiles that use it, so the decode
//    (vector ports) overlaps the multiplies (the tile unit);
//  * B = 16 batch rows x 64 columns of activations, laid out once per call
//    by amx_pack_activations;
//  * C = 16 weight rows x 16 batch rows, transposed on the way out to
//    y[n][m], minus sum(x) of each batch row.
// A group of RT x 16 weight rows meets TB blocks of 16 batch rows with
// RT * TB accumulator tiles (at most 4 of the 8 tiles; A takes RT more, B
// one), so each decoded A tile serves TB multiplies. Rows left over (fewer
// than a group) and batches below kAmxMinBatch run the AVX-512 kernel.
#include <immintrin.h>

#include "fabric/fast_engine_kernels.h"

namespace tfmbs::fabric::fast_detail {
namespace {

inline constexpr int kTileRows = 16;
inline constexpr int kTileBytes = 64;
inline constexpr int64_t kTileSize = kTileRows * kTileBytes;
inline constexpr int kB = 7;  // the B tile; A tiles are 4.., C tiles 0..3

// The tile configuration (palette 1): every tile 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Transposes the 16 x 16 int32 matrix held in v[0..15] (row i in v[i]).
inline void transpose16(__m512i v[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
  }
  // Then v[4q + e], 128-bit lane L, element m = row 4q + m, column 4L + e.
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    v[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    v[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    v[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int e = 0; e < 4; ++e) {
    const __m512i lo01 = _mm512_shuffle_i32x4(v[e], v[4 + e], 0x44), hi01 = _mm512_shuffle_i32x4(v[8 + e], v[12 + e], 0x44);
    const __m512i lo23 = _mm512_shuffle_i32x4(v[e], v[4 + e], 0xee), hi23 = _mm512_shuffle_i32x4(v[8 + e], v[12 + e], 0xee);
    t[e] = _mm512_shuffle_i32x4(lo01, hi01, 0x88);
    t[4 + e] = _mm512_shuffle_i32x4(lo01, hi01, 0xdd);
    t[8 + e] = _mm512_shuffle_i32x4(lo23, hi23, 0x88);
    t[12 + e] = _mm512_shuffle_i32x4(lo23, hi23, 0xdd);
  }
  for (int i = 0; i < 16; ++i) v[i] = t[i];
}

// tdpbusd C, A, kB for the accumulator C of a group with RT*TB of them (the
// tile numbers must be literals).
template <int C, int A, int RT, int TB>
inline __attribute__((always_inline)) void multiply() {
  if constexpr (C < RT * TB) {
#define TFMBS_TDPBUSD(c, a) \
  if constexpr (C == c && A == a) _tile_dpbusd(c, a, 7);
    TFMBS_TDPBUSD(0, 4) TFMBS_TDPBUSD(1, 4) TFMBS_TDPBUSD(2, 4) TFMBS_TDPBUSD(3, 4)
    TFMBS_TDPBUSD(0, 5) TFMBS_TDPBUSD(1, 5) TFMBS_TDPBUSD(2, 5) TFMBS_TDPBUSD(3, 5)
#undef TFMBS_TDPBUSD
  }
}

template <int C, int RT, int TB>
inline __attribute__((always_inline)) void store_accumulator(const Int8Job& j, int64_t r, int64_t tb0, int32_t* c) {
  if constexpr (C < RT * TB) {
    if constexpr (C == 0) _tile_stored(0, c, kTileBytes);
    if constexpr (C == 1) _tile_stored(1, c, kTileBytes);
    if constexpr (C == 2) _tile_stored(2, c, kTileBytes);
    if constexpr (C == 3) _tile_stored(3, c, kTileBytes);
    const int64_t row = r + (C / TB) * kTileRows, n0 = (tb0 + C % TB) * kTileRows;
    const int64_t batch_rows = j.n - n0 < kTileRows ? j.n - n0 : kTileRows;
    __m512i v[16];
    for (int i = 0; i < 16; ++i) v[i] = _mm512_load_si512(c + i * 16);
    transpose16(v);  // v[u]: batch row n0 + u, weight rows row..row+15
    for (int64_t u = 0; u < batch_rows; ++u)
      _mm512_storeu_si512(j.y + (n0 + u) * j.m + row, _mm512_sub_epi32(v[u], _mm512_set1_epi32(j.x_sum[n0 + u])));
  }
}

// Weight rows r..r + 16*RT - 1 against batch-row blocks tb0..tb0 + TB - 1.
// prefetch: the first pass over these rows (tb0 == 0), whose codes come
// from memory: fetch the next group's lines (kRows * blocks of them, the
// rows being contiguous), kRows per block of this one, into L2: a whole
// group ahead is far, as with kPrefetchBytes.
template <int RT, int TB>
void group(const Int8Job& j, int64_t r, int64_t tb0, bool prefetch) {
  static_assert(RT >= 1 && RT <= 2 && RT * TB <= 4, "tiles: RT * TB accumulators, RT A tiles, one B tile");
  constexpr int kRows = RT * kTileRows;
  alignas(64) uint8_t a[2][4][kRows][kTileBytes];  // [buffer][code group][row][column]
  alignas(64) int32_t c[kTileRows * 16];
  const int64_t batch_blocks = (j.n + kTileRows - 1) / kTileRows;
  const uint8_t* codes = j.codes + r * static_cast<int64_t>(j.row_bytes);
  auto decode = [&](int64_t b, int buf) {
    if (prefetch) {
      const char* next = reinterpret_cast<const char*>(codes + kRows * j.row_bytes);
      for (int64_t l = 0; l < kRows; ++l) _mm_prefetch(next + (b * kRows + l) * 64, _MM_HINT_T1);
    }
#pragma GCC unroll 32
    for (int i = 0; i < kRows; ++i) {
      const __m512i v = _mm512_load_si512(codes + i * j.row_bytes + b * 64);
      // Code group g: bits 2g, 2g + 1 of each byte to bits 0, 1. The affine
      // matrix's byte 7 - k selects the source bits of result bit k.
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const long long select = static_cast<long long>(((1ull << (2 * g)) << 56) | ((1ull << (2 * g + 1)) << 48));
        _mm512_store_si512(a[buf][g][i], _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64(select), 0));
      }
    }
    // The tile loads read `a` through asm that declares no memory operand:
    // the compiler must not sink or drop these stores past them.
    asm volatile("" ::: "memory");
  };
  _tile_zero(0);
  if constexpr (RT * TB > 1) _tile_zero(1);
  if constexpr (RT * TB > 2) _tile_zero(2);
  if constexpr (RT * TB > 3) _tile_zero(3);
  if (j.blocks > 0) decode(0, 0);  // no columns: the zero tiles are the products
  for (int64_t b = 0; b < j.blocks; ++b) {
    if (b + 1 < j.blocks) decode(b + 1, (b + 1) & 1);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      _tile_loadd(4, a[b & 1][g][0], kTileBytes);
      if constexpr (RT > 1) _tile_loadd(5, a[b & 1][g][kTileRows], kTileBytes);
      const int8_t* x = j.x_tiles + ((b * 4 + g) * batch_blocks + tb0) * kTileSize;
      _tile_loadd(7, x, kTileBytes);
      multiply<0, 4, RT, TB>();
      multiply<TB, 5, RT, TB>();
      if constexpr (TB > 1) {
        _tile_loadd(7, x + kTileSize, kTileBytes);
        multiply<1, 4, RT, TB>();
        multiply<TB + 1, 5, RT, TB>();
      }
      if constexpr (TB > 2) {
        _tile_loadd(7, x + 2 * kTileSize, kTileBytes);
        multiply<2, 4, RT, TB>();
      }
      if constexpr (TB > 3) {
        _tile_loadd(7, x + 3 * kTileSize, kTileBytes);
        multiply<3, 4, RT, TB>();
      }
    }
  }
  store_accumulator<0, RT, TB>(j, r, tb0, c);
  store_accumulator<1, RT, TB>(j, r, tb0, c);
  store_accumulator<2, RT, TB>(j, r, tb0, c);
  store_accumulator<3, RT, TB>(j, r, tb0, c);
}

}  // namespace

void amx_pack_activations(const int8_t* x, int64_t x_stride, int64_t n, int64_t padded_cols, int8_t* out) {
  const int64_t batch_blocks = (n + kTileRows - 1) / kTileRows, steps = padded_cols / kTileBytes;
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t tb = 0; tb < batch_blocks; ++tb) {
      // Rows of 64 activations (16 groups of 4) of 16 batch rows, transposed
      // as 16 x 16 int32: tile row q = group q of every batch row.
      __m512i v[16];
      for (int64_t u = 0; u < kTileRows; ++u) {
        const int64_t row = tb * kTileRows + u;
        v[u] = row < n ? _mm512_loadu_si512(x + row * x_stride + s * kTileBytes) : _mm512_setzero_si512();
      }
      transpose16(v);
      int8_t* tile = out + (s * batch_blocks + tb) * kTileSize;
      for (int q = 0; q < kTileRows; ++q) _mm512_store_si512(tile + q * kTileBytes, v[q]);
    }
  }
}

void int8_rows_amx(const Int8Job& j, int64_t r0, int64_t r1) {
  if (j.x_tiles == nullptr) return int8_rows_avx512(j, r0, r1);
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kTileRows;
    config.colsb[t] = kTileBytes;
  }
  asm volatile("" ::: "memory");  // as in decode: ldtilecfg's asm declares only part of `config`
  _tile_loadconfig(&config);
  const int64_t batch_blocks = (j.n + kTileRows - 1) / kTileRows;
  // Up to two batch blocks: 32 weight rows a group; more: 16 rows against
  // up to 4 blocks at a time.
  static_assert(kAmxRowGroup == 2 * kTileRows, "the engine's tasks are whole groups of 32 rows");
  const int64_t group_rows = batch_blocks <= 2 ? kAmxRowGroup : kTileRows;
  int64_t r = r0;
  for (; r + group_rows <= r1; r += group_rows) {
    if (batch_blocks == 1) {
      group<2, 1>(j, r, 0, true);
    } else if (batch_blocks == 2) {
      group<2, 2>(j, r, 0, true);
    } else {
      for (int64_t tb0 = 0; tb0 < batch_blocks; tb0 += 4) {
        switch (batch_blocks - tb0 < 4 ? batch_blocks - tb0 : 4) {
          case 1: group<1, 1>(j, r, tb0, tb0 == 0); break;
          case 2: group<1, 2>(j, r, tb0, tb0 == 0); break;
          case 3: group<1, 3>(j, r, tb0, tb0 == 0); break;
          default: group<1, 4>(j, r, tb0, tb0 == 0); break;
        }
      }
    }
  }
  // Hand the tile state back: a thread holding it makes every context
  // switch save 8 KiB more.
  _tile_release();
  if (j.zero_counts != nullptr && r > r0) {
    ZeroCountJob zeros;
    static_cast<FrameCodes&>(zeros) = j;
    zeros.zero_counts = j.zero_counts;
    zeros.stride = j.x_stride;
    zeros.chunks = 1;
    zeros.zero_hits = j.zero_hits;
    zero_hits_avx512(zeros, r0, r);
  }
  if (r < r1) int8_rows_avx512(j, r, r1);
}

}  // namespace tfmbs::fabric::fast_detail
