// PT-5 with AVX-512: level Isa::Avx512 (cpu_features.h), compiled with its
// flags and called only when cpu_supports(Isa::Avx512). This file is why
// that level needs VBMI (vpermb, vpermt2b).
//
// Same arithmetic as pt5_codec_avx2.cpp (see there for why the multiply by
// C_i = ceil(65536 / 3^(i+1)) followed by mulhi(., 3) is exact), but 64
// packed bytes -> 320 trits per step with cross-lane byte permutes, and the
// tail handled with masked loads/stores instead of the scalar code.
#include <immintrin.h>

#include "fabric/pt5_codec.h"
#include "fabric/pt5_codec_detail.h"

namespace tfmbs::fabric::pt5::detail {
namespace {

constexpr uint16_t kDigitMul[5] = {21846, 7282, 2428, 810, 270};

// Decode: output vector v (trits 64v..64v+63 of a 320-trit step) is
// packus(A, B): byte 16L+j of lane L comes from word 8L+j of A (j < 8) or
// word 8L+j-8 of B. Each word gets its packed byte by a permute whose odd
// (high) bytes are zeroed by the mask.
struct DecodeTables {
  alignas(64) uint8_t permute[5][2][64];
  alignas(64) uint16_t mul[5][2][32];
};

constexpr DecodeTables make_decode_tables() {
  DecodeTables t{};
  for (size_t v = 0; v < 5; ++v)
    for (size_t half = 0; half < 2; ++half)
      for (size_t lane = 0; lane < 4; ++lane)
        for (size_t j = 0; j < 8; ++j) {
          const size_t o = 64 * v + 16 * lane + 8 * half + j;
          const size_t word = 8 * lane + j;
          t.permute[v][half][2 * word] = static_cast<uint8_t>(o / 5);
          t.mul[v][half][word] = kDigitMul[o % 5];
        }
  return t;
}
constexpr DecodeTables kDecode = make_decode_tables();

// Encode: T_i[j] = trit 5j+i of the step, gathered from the 5 loaded
// vectors Z_0..Z_4 (trits 64m..64m+63): positions < 128 from (Z0, Z1),
// 128..255 from (Z2, Z3), 256..319 from Z4 (as the pair (Z4, Z4), its
// index p mod 128 < 64); two blends pick the right one.
struct EncodeTables {
  alignas(64) uint8_t permute[5][64];
  uint64_t from_mid[5];   // bit j: 5j+i >= 128
  uint64_t from_high[5];  // bit j: 5j+i >= 256
};

constexpr EncodeTables make_encode_tables() {
  EncodeTables t{};
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = 0; j < 64; ++j) {
      const size_t p = 5 * j + i;
      t.permute[i][j] = static_cast<uint8_t>(p % 128);
      if (p >= 128) t.from_mid[i] |= uint64_t{1} << j;
      if (p >= 256) t.from_high[i] |= uint64_t{1} << j;
    }
  return t;
}
constexpr EncodeTables kEncode = make_encode_tables();

inline __mmask64 first_n(size_t n) {
  return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
}

inline __m512i load64(const void* p) {
  return _mm512_load_si512(p);
}

// Decodes 64 packed bytes (already validated) into trits; stores the first
// `n_out` (<= 320) of them.
inline void decode_step(__m512i x, int8_t* dst, size_t n_out) {
  const __m512i three = _mm512_set1_epi16(3);
  const __m512i one = _mm512_set1_epi8(1);
  const __mmask64 low_bytes = 0x5555555555555555ull;
  for (size_t v = 0; v < 5 && 64 * v < n_out; ++v) {
    __m512i a = _mm512_maskz_permutexvar_epi8(low_bytes, load64(kDecode.permute[v][0]), x);
    __m512i c = _mm512_maskz_permutexvar_epi8(low_bytes, load64(kDecode.permute[v][1]), x);
    a = _mm512_mulhi_epu16(_mm512_mullo_epi16(a, load64(kDecode.mul[v][0])), three);
    c = _mm512_mulhi_epu16(_mm512_mullo_epi16(c, load64(kDecode.mul[v][1])), three);
    const __m512i trits = _mm512_sub_epi8(_mm512_packus_epi16(a, c), one);
    if (n_out >= 64 * v + 64)  // plain stores in the loop: masked ones are slower
      _mm512_storeu_si512(dst + 64 * v, trits);
    else
      _mm512_mask_storeu_epi8(dst + 64 * v, first_n(n_out - 64 * v), trits);
  }
}

// Packs 320 trits held in z[0..4] (already validated) into 64 bytes.
inline __m512i encode_step(const __m512i z[5]) {
  __m512i acc = _mm512_setzero_si512();
  for (int i = 4; i >= 0; --i) {
    const __m512i idx = load64(kEncode.permute[i]);
    __m512i digit = _mm512_permutex2var_epi8(z[0], idx, z[1]);
    digit = _mm512_mask_blend_epi8(kEncode.from_mid[i], digit,
                                   _mm512_permutex2var_epi8(z[2], idx, z[3]));
    digit = _mm512_mask_blend_epi8(kEncode.from_high[i], digit,
                                   _mm512_permutex2var_epi8(z[4], idx, z[4]));
    acc = _mm512_add_epi8(_mm512_add_epi8(_mm512_add_epi8(acc, acc), acc), digit);
  }
  return _mm512_add_epi8(acc, _mm512_set1_epi8(121));
}

}  // namespace

void decode_avx512(const uint8_t* packed, size_t n_trits, int8_t* out) {
  const __m512i first_invalid = _mm512_set1_epi8(static_cast<char>(243));
  const size_t n_bytes = packed_size(n_trits);
  for (size_t b = 0; b < n_bytes; b += 64) {
    const __mmask64 m = first_n(n_bytes - b);
    // Masked loads only for the tail: in the loop they defeat streaming.
    const __m512i x = n_bytes - b >= 64 ? _mm512_loadu_si512(packed + b)
                                        : _mm512_maskz_loadu_epi8(m, packed + b);
    if ((_mm512_cmpge_epu8_mask(x, first_invalid) & m) != 0) {
      decode_scalar_from(packed, n_trits, out, b);  // throws, naming the byte
      return;
    }
    const size_t n_out = n_trits - 5 * b;
    decode_step(x, out + 5 * b, n_out < 320 ? n_out : 320);
  }
}

void encode_avx512(const int8_t* trits, size_t n_trits, uint8_t* out) {
  const __m512i one = _mm512_set1_epi8(1);
  const __m512i two = _mm512_set1_epi8(2);
  const size_t n_bytes = packed_size(n_trits);
  for (size_t b = 0; b < n_bytes; b += 64) {
    const int8_t* in = trits + 5 * b;
    const size_t n_in = n_trits - 5 * b;
    __m512i z[5];
    __mmask64 bad = 0;
    for (size_t m = 0; m < 5; ++m) {
      // Masked-off trits load as 0: the spec's zero-trit padding.
      if (n_in >= 320) {
        z[m] = _mm512_loadu_si512(in + 64 * m);
      } else {
        const __mmask64 live = 64 * m < n_in ? first_n(n_in - 64 * m) : 0;
        z[m] = _mm512_maskz_loadu_epi8(live, in + 64 * m);
      }
      bad |= _mm512_cmpgt_epu8_mask(_mm512_add_epi8(z[m], one), two);
    }
    if (bad != 0) {
      encode_scalar_from(trits, n_trits, out, b);  // throws, naming the index
      return;
    }
    if (n_bytes - b >= 64)
      _mm512_storeu_si512(out + b, encode_step(z));
    else
      _mm512_mask_storeu_epi8(out + b, first_n(n_bytes - b), encode_step(z));
  }
}

}  // namespace tfmbs::fabric::pt5::detail
