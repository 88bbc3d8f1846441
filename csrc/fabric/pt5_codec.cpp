// PT-5 scalar reference and the run-time ISA dispatch (cpu_features.h).
#include "fabric/pt5_codec.h"

#include <string>

#include "fabric/cpu_features.h"
#include "fabric/pt5_codec_detail.h"
#include "fabric/status.h"

namespace tfmbs::fabric::pt5 {
namespace detail {
namespace {

[[noreturn]] void throw_bad_trit(size_t index, int value) {
  throw FabricError(Status::ErrPack,
                    "PT-5 encode: trit at index " + std::to_string(index) +
                        " is " + std::to_string(value) +
                        "; allowed values are -1, 0, 1");
}

[[noreturn]] void throw_bad_byte(size_t offset, unsigned value) {
  throw FabricError(Status::ErrPack,
                    "PT-5 decode: byte at offset " + std::to_string(offset) +
                        " is " + std::to_string(value) +
                        "; valid PT-5 bytes are 0..242");
}

}  // namespace

// The definition, digit by digit: byte = sum_i (t_i + 1) * 3^i.
void encode_scalar_from(const int8_t* trits, size_t n_trits, uint8_t* out,
                        size_t first_byte) {
  const size_t n_bytes = packed_size(n_trits);
  for (size_t b = first_byte; b < n_bytes; ++b) {
    unsigned byte = 0, weight = 1;
    for (size_t i = 0; i < 5; ++i, weight *= 3) {
      const size_t index = 5 * b + i;
      int t = 0;  // the tail is padded with zero trits
      if (index < n_trits) {
        t = trits[index];
        if (t < -1 || t > 1) throw_bad_trit(index, t);
      }
      byte += static_cast<unsigned>(t + 1) * weight;
    }
    out[b] = static_cast<uint8_t>(byte);
  }
}

void decode_scalar_from(const uint8_t* packed, size_t n_trits, int8_t* out,
                        size_t first_byte) {
  const size_t n_bytes = packed_size(n_trits);
  for (size_t b = first_byte; b < n_bytes; ++b) {
    unsigned byte = packed[b];
    if (byte >= 243) throw_bad_byte(b, byte);
    for (size_t i = 0; i < 5 && 5 * b + i < n_trits; ++i) {
      out[5 * b + i] = static_cast<int8_t>(static_cast<int>(byte % 3) - 1);
      byte /= 3;
    }
  }
}

void encode_scalar(const int8_t* trits, size_t n_trits, uint8_t* out) {
  encode_scalar_from(trits, n_trits, out, 0);
}

void decode_scalar(const uint8_t* packed, size_t n_trits, int8_t* out) {
  decode_scalar_from(packed, n_trits, out, 0);
}

Codec codec(Isa isa) {
  switch (isa) {
    case Isa::Amx:
    case Isa::Avx512: return Codec{encode_avx512, decode_avx512};
    case Isa::Avx2: return Codec{encode_avx2, decode_avx2};
    case Isa::Scalar: break;
  }
  return Codec{encode_scalar, decode_scalar};
}

}  // namespace detail

namespace {
const detail::Codec& kernels() {
  static const detail::Codec k = detail::codec(best_isa());
  return k;
}
}  // namespace

void encode(const int8_t* trits, size_t n_trits, uint8_t* out) {
  kernels().encode(trits, n_trits, out);
}

void decode(const uint8_t* packed, size_t n_trits, int8_t* out) {
  kernels().decode(packed, n_trits, out);
}

}  // namespace tfmbs::fabric::pt5
