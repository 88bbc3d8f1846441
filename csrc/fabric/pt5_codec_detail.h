// PT-5 internals exposed for tests and benchmarks: the scalar reference and
// each ISA's implementation, callable directly so tests can prove that they
// agree on every input. Production code calls pt5::encode / pt5::decode,
// which dispatch once (at first use) to the best ISA the CPU has.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tfmbs::fabric::pt5::detail {

enum class Isa : uint8_t { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
// Whether this CPU can run `isa`'s implementation. Avx512 needs F, BW and
// VBMI (byte permutes); a CPU with AVX-512 but no VBMI (Skylake-X) uses Avx2.
bool cpu_supports(Isa isa);
// The implementation pt5::encode/decode dispatch to (best supported ISA).
Isa active_isa();

// Same contracts as pt5::encode / pt5::decode, including identical error
// messages; only the speed differs. Calling an ISA the CPU lacks is UB:
// check cpu_supports first.
void encode_scalar(const int8_t* trits, size_t n_trits, uint8_t* out);
void decode_scalar(const uint8_t* packed, size_t n_trits, int8_t* out);
void encode_avx2(const int8_t* trits, size_t n_trits, uint8_t* out);
void decode_avx2(const uint8_t* packed, size_t n_trits, int8_t* out);
void encode_avx512(const int8_t* trits, size_t n_trits, uint8_t* out);
void decode_avx512(const uint8_t* packed, size_t n_trits, int8_t* out);

// The scalar reference applied from packed byte `first_byte` on (trit
// 5*first_byte). SIMD versions finish their tail with it and hand a block
// that holds an invalid value to it, so errors name the same index/offset.
void encode_scalar_from(const int8_t* trits, size_t n_trits, uint8_t* out,
                        size_t first_byte);
void decode_scalar_from(const uint8_t* packed, size_t n_trits, int8_t* out,
                        size_t first_byte);

}  // namespace tfmbs::fabric::pt5::detail
