// PT-5 internals exposed for tests and benchmarks: the scalar reference and
// each ISA's implementation, callable directly so tests can prove that they
// agree on every input. Production code calls pt5::encode / pt5::decode,
// which dispatch once (at first use) to codec(best_isa()) (cpu_features.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fabric/cpu_features.h"

namespace tfmbs::fabric::pt5::detail {

// Same contracts as pt5::encode / pt5::decode, including identical error
// messages; only the speed differs. Calling an ISA the CPU lacks is UB:
// check cpu_supports (cpu_features.h) first.
void encode_scalar(const int8_t* trits, size_t n_trits, uint8_t* out);
void decode_scalar(const uint8_t* packed, size_t n_trits, int8_t* out);
void encode_avx2(const int8_t* trits, size_t n_trits, uint8_t* out);
void decode_avx2(const uint8_t* packed, size_t n_trits, int8_t* out);
void encode_avx512(const int8_t* trits, size_t n_trits, uint8_t* out);
void decode_avx512(const uint8_t* packed, size_t n_trits, int8_t* out);

// One ISA's implementation (Scalar: the reference), e.g. to run every
// supported_isas() level. As above, only call it if cpu_supports(isa).
struct Codec {
  void (*encode)(const int8_t* trits, size_t n_trits, uint8_t* out);
  void (*decode)(const uint8_t* packed, size_t n_trits, int8_t* out);
};
Codec codec(Isa isa);

// The scalar reference applied from packed byte `first_byte` on (trit
// 5*first_byte). SIMD versions finish their tail with it and hand a block
// that holds an invalid value to it, so errors name the same index/offset.
void encode_scalar_from(const int8_t* trits, size_t n_trits, uint8_t* out,
                        size_t first_byte);
void decode_scalar_from(const uint8_t* packed, size_t n_trits, int8_t* out,
                        size_t first_byte);

}  // namespace tfmbs::fabric::pt5::detail
