// PT-5 with AVX2: level Isa::Avx2 (cpu_features.h), compiled with its flags
// and called only when cpu_supports(Isa::Avx2).
//
// Decode uses the multiply trick: for a byte b < 243, trit t_i is digit i of
// b in base 3, i.e. floor(3 * frac(b / 3^(i+1))). With C_i =
// ceil(65536 / 3^(i+1)), (b * C_i mod 65536) approximates that fraction
// from above by less than 243/65536 < 1/243 (the spacing of the exact
// fractions), so mulhi(b * C_i, 3) is exactly the digit for every b < 243
// (checked exhaustively by the tests). Each output trit gets its source
// byte by a shuffle, then one mullo + one mulhi + a pack.
//
// Encode transposes 80 trits per 128-bit lane with shuffles so that trit i of
// 16 output bytes sits in one register T_i, then evaluates the base-3 number
// by Horner in wrapping byte arithmetic: byte = sum t_i 3^i + 121.
#include <immintrin.h>

#include <array>

#include "fabric/pt5_codec.h"
#include "fabric/pt5_codec_detail.h"

namespace tfmbs::fabric::pt5::detail {
namespace {

constexpr uint16_t kDigitMul[5] = {21846, 7282, 2428, 810, 270};

// Decode: 32 packed bytes -> 160 trits = 5 output vectors of 32 trits.
// Output vector v reads the 8 packed bytes at kSrc[v] (broadcast to both
// lanes). After packus(A, B), byte 16L+j of the lane-L result comes from
// word j of A's lane L (j < 8) or word j-8 of B's lane L.
constexpr size_t kSrc[5] = {0, 6, 12, 19, 24};

struct DecodeTables {
  alignas(32) uint8_t shuffle[5][2][32];
  alignas(32) uint16_t mul[5][2][16];
};

constexpr DecodeTables make_decode_tables() {
  DecodeTables t{};
  for (size_t v = 0; v < 5; ++v)
    for (size_t half = 0; half < 2; ++half)
      for (size_t lane = 0; lane < 2; ++lane)
        for (size_t j = 0; j < 8; ++j) {
          const size_t o = 32 * v + 16 * lane + 8 * half + j;
          const size_t word = 8 * lane + j;
          t.shuffle[v][half][2 * word] = static_cast<uint8_t>(o / 5 - kSrc[v]);
          t.shuffle[v][half][2 * word + 1] = 0x80;  // zero high byte
          t.mul[v][half][word] = kDigitMul[o % 5];
        }
  return t;
}
constexpr DecodeTables kDecode = make_decode_tables();

// Encode: lane L packs trits 80L..80L+79 into bytes 16L..16L+15. Source
// vector S_k holds trits 80L+16k.. in lane L; T_i = OR_k shuffle(S_k, idx).
struct EncodeTables {
  alignas(32) uint8_t shuffle[5][5][32];  // [digit i][source k]
};

constexpr EncodeTables make_encode_tables() {
  EncodeTables t{};
  for (size_t i = 0; i < 5; ++i)
    for (size_t k = 0; k < 5; ++k)
      for (size_t lane = 0; lane < 2; ++lane)
        for (size_t j = 0; j < 16; ++j) {
          const size_t p = 5 * j + i;
          t.shuffle[i][k][16 * lane + j] =
              p / 16 == k ? static_cast<uint8_t>(p % 16) : uint8_t{0x80};
        }
  return t;
}
constexpr EncodeTables kEncode = make_encode_tables();

inline __m256i load32(const void* p) {
  return _mm256_load_si256(static_cast<const __m256i*>(p));
}

}  // namespace

void decode_avx2(const uint8_t* packed, size_t n_trits, int8_t* out) {
  const __m256i three = _mm256_set1_epi16(3);
  const __m256i one = _mm256_set1_epi8(1);
  const __m256i first_invalid = _mm256_set1_epi8(static_cast<char>(243));
  size_t b = 0;
  for (; (b + 32) * 5 <= n_trits; b += 32) {
    const uint8_t* in = packed + b;
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
    const __m256i bad = _mm256_cmpeq_epi8(_mm256_max_epu8(x, first_invalid), x);
    if (_mm256_movemask_epi8(bad) != 0) {
      decode_scalar_from(packed, n_trits, out, b);  // throws, naming the byte
      return;
    }
    int8_t* dst = out + 5 * b;
    for (size_t v = 0; v < 5; ++v) {
      const __m256i src = _mm256_broadcastq_epi64(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + kSrc[v])));
      __m256i a = _mm256_shuffle_epi8(src, load32(kDecode.shuffle[v][0]));
      __m256i c = _mm256_shuffle_epi8(src, load32(kDecode.shuffle[v][1]));
      a = _mm256_mulhi_epu16(_mm256_mullo_epi16(a, load32(kDecode.mul[v][0])), three);
      c = _mm256_mulhi_epu16(_mm256_mullo_epi16(c, load32(kDecode.mul[v][1])), three);
      const __m256i trits = _mm256_sub_epi8(_mm256_packus_epi16(a, c), one);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32 * v), trits);
    }
  }
  decode_scalar_from(packed, n_trits, out, b);
}

void encode_avx2(const int8_t* trits, size_t n_trits, uint8_t* out) {
  const __m256i one = _mm256_set1_epi8(1);
  const __m256i three = _mm256_set1_epi8(3);
  const __m256i bias = _mm256_set1_epi8(121);
  size_t b = 0;
  for (; (b + 32) * 5 <= n_trits; b += 32) {
    const int8_t* in = trits + 5 * b;
    __m256i s[5];
    __m256i bad = _mm256_setzero_si256();
    for (size_t k = 0; k < 5; ++k) {
      s[k] = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(in + 80 + 16 * k),
                                 reinterpret_cast<const __m128i*>(in + 16 * k));
      // t + 1 must be 0, 1 or 2 as an unsigned byte.
      const __m256i u = _mm256_add_epi8(s[k], one);
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(_mm256_max_epu8(u, three), u));
    }
    if (_mm256_movemask_epi8(bad) != 0) {
      encode_scalar_from(trits, n_trits, out, b);  // throws, naming the index
      return;
    }
    __m256i acc = _mm256_setzero_si256();
    for (int i = 4; i >= 0; --i) {
      __m256i digit = _mm256_shuffle_epi8(s[0], load32(kEncode.shuffle[i][0]));
      for (size_t k = 1; k < 5; ++k)
        digit = _mm256_or_si256(
            digit, _mm256_shuffle_epi8(s[k], load32(kEncode.shuffle[i][k])));
      acc = _mm256_add_epi8(_mm256_add_epi8(_mm256_add_epi8(acc, acc), acc), digit);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b),
                        _mm256_add_epi8(acc, bias));
  }
  encode_scalar_from(trits, n_trits, out, b);
}

}  // namespace tfmbs::fabric::pt5::detail
