// T2B decoder: never crashes, fails only with ErrPack naming a 0b11 code
// that is really there, and a successful decode re-encodes to the input.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fabric/status.h"
#include "fabric/t2b_codec.h"

namespace t2b = tfmbs::fabric::t2b;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t tail = 1 + data[0] % 4;  // trits used in the last byte
  const uint8_t* packed = data + 1;
  const size_t n_bytes = size - 1;
  const size_t n_trits = n_bytes == 0 ? 0 : 4 * (n_bytes - 1) + tail;
  bool has_invalid = false;
  for (size_t i = 0; i < n_trits; ++i) has_invalid |= ((packed[i / 4] >> (2 * (i % 4))) & 3) == 3;

  std::vector<int8_t> trits(n_trits);
  try {
    t2b::decode(packed, n_trits, trits.data());
  } catch (const tfmbs::fabric::FabricError& e) {
    if (e.status() != tfmbs::fabric::Status::ErrPack || !has_invalid) __builtin_trap();
    return 0;
  }
  if (has_invalid) __builtin_trap();
  std::vector<uint8_t> again(t2b::packed_size(n_trits));
  t2b::encode(trits.data(), n_trits, again.data());
  const size_t full = n_trits / 4;
  if (full > 0 && std::memcmp(again.data(), packed, full) != 0) __builtin_trap();
  return 0;
}
