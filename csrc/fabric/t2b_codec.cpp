#include "fabric/t2b_codec.h"

#include <array>
#include <cstring>
#include <string>

#include "fabric/status.h"

namespace tfmbs::fabric::t2b {
namespace {

// Four decoded trits per byte value (little end first), so the hot loop is
// one table load and one 4-byte store per packed byte.
constexpr std::array<std::array<int8_t, 4>, 256> make_table() {
  std::array<std::array<int8_t, 4>, 256> t{};
  for (unsigned b = 0; b < 256; ++b)
    for (unsigned k = 0; k < 4; ++k) t[b][k] = static_cast<int8_t>(((b >> (2 * k)) & 3) - 1);
  return t;
}
constexpr auto kTable = make_table();

// Nonzero iff one of the first `codes` 2-bit codes of `byte` is 0b11.
inline unsigned invalid_codes(unsigned byte, size_t codes) {
  const unsigned mask = codes >= 4 ? 0x55u : (0x55u & ((1u << (2 * codes)) - 1));
  return byte & (byte >> 1) & mask;
}

[[noreturn]] void throw_bad_code(const uint8_t* packed, size_t b, unsigned bad) {
  const size_t k = static_cast<size_t>(__builtin_ctz(bad)) / 2;
  throw FabricError(Status::ErrPack,
                    "T2B decode: trit " + std::to_string(4 * b + k) + " (byte offset " +
                        std::to_string(b) + ", value " + std::to_string(packed[b]) +
                        ", bits " + std::to_string(2 * k) + ".." + std::to_string(2 * k + 1) +
                        ") has code 0b11; valid codes are 0b00 (-1), 0b01 (0), 0b10 (+1)");
}

}  // namespace

void encode(const int8_t* trits, size_t n_trits, uint8_t* out) {
  const size_t n_bytes = packed_size(n_trits);
  for (size_t b = 0; b < n_bytes; ++b) {
    unsigned byte = 0;
    for (size_t k = 0; k < 4; ++k) {
      const size_t index = 4 * b + k;
      int t = 0;  // padding: zero trits
      if (index < n_trits) {
        t = trits[index];
        if (t < -1 || t > 1)
          throw FabricError(Status::ErrPack, "T2B encode: trit at index " + std::to_string(index) +
                                                 " is " + std::to_string(t) +
                                                 "; allowed values are -1, 0, 1");
      }
      byte |= static_cast<unsigned>(t + 1) << (2 * k);
    }
    out[b] = static_cast<uint8_t>(byte);
  }
}

void decode(const uint8_t* packed, size_t n_trits, int8_t* out) {
  const size_t full = n_trits / 4;
  for (size_t b = 0; b < full; ++b) {
    if (unsigned bad = invalid_codes(packed[b], 4)) throw_bad_code(packed, b, bad);
    std::memcpy(out + 4 * b, kTable[packed[b]].data(), 4);
  }
  if (const size_t rest = n_trits % 4) {
    if (unsigned bad = invalid_codes(packed[full], rest)) throw_bad_code(packed, full, bad);
    std::memcpy(out + 4 * full, kTable[packed[full]].data(), rest);
  }
}

}  // namespace tfmbs::fabric::t2b
