// The batch-1 lookup-table kernel over PT-5 row blocks (fast_engine_kernels.h),
// level Isa::Avx512: vpermw, vpmulhuw, vpmaddubsw (avx512bw).
//
// Per 64 bytes of a row block (32 rows x 2 groups): the even bytes (low
// byte of each word) and odd bytes are split into q = mulhi(b, 2428)
// (exact b / 27 for b <= 242) and r = b - 27q; vpermw looks the four
// indices up in the pair's tables. Sums accumulate in int16 for
// kFlushPairs pairs (|table entry| <= 5 * 2 * 128, so 24 groups stay below
// 2^15) and then widen into int32.
#include <immintrin.h>

#include "fabric/fast_engine_kernels.h"
#include "fabric/fast_frame.h"

namespace tfmbs::fabric::fast_detail {
namespace {

inline constexpr int64_t kFlushPairs = 12;

template <int R>
inline __attribute__((always_inline)) void pt5_tile(const Pt5Job& j, int64_t b0) {
  __m512i lo[R], hi[R];
  const uint8_t* blocks[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    lo[r] = hi[r] = _mm512_setzero_si512();
    blocks[r] = j.blocks + (b0 + r) * j.block_bytes;
  }
  const __m512i low_byte = _mm512_set1_epi16(0xff), inv27 = _mm512_set1_epi16(2428),
                k27 = _mm512_set1_epi16(27);
  const auto* tables = reinterpret_cast<const __m512i*>(j.tables);
  for (int64_t p0 = 0; p0 < j.pairs; p0 += kFlushPairs) {
    const int64_t p1 = p0 + kFlushPairs < j.pairs ? p0 + kFlushPairs : j.pairs;
    __m512i acc[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (int64_t p = p0; p < p1; ++p) {
      const __m512i t3e = _mm512_load_si512(tables + 4 * p), t3o = _mm512_load_si512(tables + 4 * p + 1);
      const __m512i t2e = _mm512_load_si512(tables + 4 * p + 2), t2o = _mm512_load_si512(tables + 4 * p + 3);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        // The R row blocks are separate streams; each is fetched ahead into
        // L2 (as the int8 kernels' codes are, kPrefetchBytes in all).
        _mm_prefetch(reinterpret_cast<const char*>(blocks[r] + p * 64 + kPrefetchBytes / 2), _MM_HINT_T2);
        const __m512i v = _mm512_load_si512(blocks[r] + p * 64);
        const __m512i be = _mm512_and_si512(v, low_byte), bo = _mm512_srli_epi16(v, 8);
        const __m512i qe = _mm512_mulhi_epu16(be, inv27), qo = _mm512_mulhi_epu16(bo, inv27);
        const __m512i re = _mm512_sub_epi16(be, _mm512_mullo_epi16(qe, k27));
        const __m512i ro = _mm512_sub_epi16(bo, _mm512_mullo_epi16(qo, k27));
        const __m512i even = _mm512_add_epi16(_mm512_permutexvar_epi16(re, t3e), _mm512_permutexvar_epi16(qe, t2e));
        const __m512i odd = _mm512_add_epi16(_mm512_permutexvar_epi16(ro, t3o), _mm512_permutexvar_epi16(qo, t2o));
        acc[r] = _mm512_add_epi16(acc[r], _mm512_add_epi16(even, odd));
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      lo[r] = _mm512_add_epi32(lo[r], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc[r])));
      hi[r] = _mm512_add_epi32(hi[r], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(acc[r], 1)));
    }
  }
  const __m512i x_sum = _mm512_set1_epi32(j.x_sum);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    // Word lane i of a block is its row i: lo holds rows 0..15, hi 16..31.
    const int64_t row = (b0 + r) * kPt5BlockRows, valid = j.m - row;
    const __mmask16 mlo = valid >= 16 ? 0xffff : static_cast<__mmask16>((1u << valid) - 1);
    const __mmask16 mhi = valid >= 32 ? 0xffff : valid <= 16 ? 0 : static_cast<__mmask16>((1u << (valid - 16)) - 1);
    _mm512_mask_storeu_epi32(j.y + row, mlo, _mm512_sub_epi32(lo[r], x_sum));
    _mm512_mask_storeu_epi32(j.y + row + 16, mhi, _mm512_sub_epi32(hi[r], x_sum));
  }
}

}  // namespace

void pt5_tables_avx512(const int8_t* x, int64_t pairs, int16_t* tables) {
  // Word lane e of a table: the codes of pattern e in its byte pair, so
  // vpmaddubsw with a broadcast (x_a, x_b) pair gives c_a * x_a + c_b * x_b.
  alignas(64) uint8_t first2[64] = {}, third[64] = {}, last2[64] = {};
  for (int e = 0; e < 27; ++e) {
    first2[2 * e] = static_cast<uint8_t>(e % 3);
    first2[2 * e + 1] = static_cast<uint8_t>(e / 3 % 3);
    third[2 * e] = static_cast<uint8_t>(e / 9);
  }
  for (int e = 0; e < 9; ++e) {
    last2[2 * e] = static_cast<uint8_t>(e % 3);
    last2[2 * e + 1] = static_cast<uint8_t>(e / 3);
  }
  const __m512i c01 = _mm512_load_si512(first2), c2 = _mm512_load_si512(third), c34 = _mm512_load_si512(last2);
  auto pair_at = [](const int8_t* p) {
    return _mm512_set1_epi16(static_cast<int16_t>(static_cast<uint8_t>(p[0]) | (static_cast<uint8_t>(p[1]) << 8)));
  };
  auto* out = reinterpret_cast<__m512i*>(tables);
  for (int64_t p = 0; p < pairs; ++p) {
    const int8_t* xe = x + 10 * p;
    const int8_t* xo = xe + 5;
    // Column 3 of a group lands in the high byte of `third`'s pairs, whose
    // codes there are 0.
    _mm512_store_si512(out + 4 * p, _mm512_add_epi16(_mm512_maddubs_epi16(c01, pair_at(xe)),
                                                     _mm512_maddubs_epi16(c2, pair_at(xe + 2))));
    _mm512_store_si512(out + 4 * p + 1, _mm512_add_epi16(_mm512_maddubs_epi16(c01, pair_at(xo)),
                                                         _mm512_maddubs_epi16(c2, pair_at(xo + 2))));
    _mm512_store_si512(out + 4 * p + 2, _mm512_maddubs_epi16(c34, pair_at(xe + 3)));
    _mm512_store_si512(out + 4 * p + 3, _mm512_maddubs_epi16(c34, pair_at(xo + 3)));
  }
}

void pt5_rows_avx512(const Pt5Job& j, int64_t r0, int64_t r1) {
  int64_t b = r0 / kPt5BlockRows;
  const int64_t b1 = (r1 + kPt5BlockRows - 1) / kPt5BlockRows;
  for (; b + 4 <= b1; b += 4) pt5_tile<4>(j, b);
  for (; b < b1; ++b) pt5_tile<1>(j, b);
}

}  // namespace tfmbs::fabric::fast_detail
