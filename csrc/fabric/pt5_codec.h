// PT-5: five balanced trits per byte, byte = sum_i (t_i + 1) * 3^i with t_0
// the least significant digit; 243..255 are invalid. A scalar reference and
// SIMD versions chosen at run time; all agree on every input.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tfmbs::fabric::pt5 {

inline constexpr size_t packed_size(size_t n_trits) { return (n_trits + 4) / 5; }

// Packs n_trits values in {-1,0,1} into packed_size(n_trits) bytes; the tail
// is padded with zero trits. A value outside {-1,0,1} throws
// FabricError(ErrPack) naming its index and value.
void encode(const int8_t* trits, size_t n_trits, uint8_t* out);
// Unpacks n_trits trits. A byte >= 243 throws FabricError(ErrPack) naming
// its offset and value; `out` is then unspecified.
void decode(const uint8_t* packed, size_t n_trits, int8_t* out);

}  // namespace tfmbs::fabric::pt5
