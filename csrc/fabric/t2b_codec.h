// T2B (TFD packing id 0x02): two bits per trit, four trits per byte, the
// first trit in the lowest two bits (trit 4j+k in bits 2k..2k+1 of byte j).
//
// Code table (code = trit + 1):
//   0b00 = -1
//   0b01 =  0
//   0b10 = +1
//   0b11 = invalid -> FabricError(ErrPack)
//
// This is also the layout of the origin design's pack_ternary /
// unpack_ternary ("8 values -> 2 bytes", -1/0/+1 as distinct 2-bit codes,
// little end first), which prints no table; value + 1 is the natural choice
// and the one we read it with, so one codec serves both. Its example:
// [1,-1,0,1, 0,-1,1,1] -> codes [2,0,1,2],[1,0,2,2] -> bytes 0x92, 0xA1.
//
// A frame of n trits takes ceil(n/4) bytes. The encoder pads the last byte
// with zero trits (0b01), as PT-5 pads with zeros; the decoder ignores the
// pad bits, so a packer that pads with 0b00 (as seed code may) reads fine.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tfmbs::fabric::t2b {

inline constexpr size_t packed_size(size_t n_trits) { return (n_trits + 3) / 4; }

// Packs n_trits values in {-1,0,1}; a value outside throws
// FabricError(ErrPack) naming its index and value.
void encode(const int8_t* trits, size_t n_trits, uint8_t* out);
// Unpacks n_trits trits; a 0b11 code among them throws FabricError(ErrPack)
// naming the trit index, the byte offset and the code; `out` is then
// unspecified.
void decode(const uint8_t* packed, size_t n_trits, int8_t* out);

// Seed 003's 2-bit layout (pack_ternary / unpack_ternary): the same bytes.
inline void pack_seed003(const int8_t* trits, size_t n, uint8_t* out) { encode(trits, n, out); }
inline void unpack_seed003(const uint8_t* packed, size_t n, int8_t* out) { decode(packed, n, out); }

}  // namespace tfmbs::fabric::t2b
