// Differential fuzzing of PT-5: the input bytes are decoded (and, read as
// trits, encoded) by the scalar reference and by every SIMD implementation
// the CPU has; any difference in output or in the error raised is a bug,
// as is a decode/encode round trip that does not give the bytes back.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/pt5_codec.h"
#include "fabric/pt5_codec_detail.h"
#include "fabric/status.h"

namespace pt5 = tfmbs::fabric::pt5;
using tfmbs::fabric::FabricError;
using tfmbs::fabric::Status;

namespace {

template <class Fn>
std::string run(Fn fn) {
  try {
    fn();
  } catch (const FabricError& e) {
    if (e.status() != Status::ErrPack) __builtin_trap();
    return e.what();
  }
  return "";
}

using DecodeFn = void (*)(const uint8_t*, size_t, int8_t*);
using EncodeFn = void (*)(const int8_t*, size_t, uint8_t*);

std::vector<std::pair<DecodeFn, EncodeFn>> simd_impls() {
  std::vector<std::pair<DecodeFn, EncodeFn>> v;
  for (tfmbs::fabric::Isa isa : tfmbs::fabric::supported_isas()) {
    if (isa == tfmbs::fabric::Isa::Scalar) continue;  // the reference
    const pt5::detail::Codec c = pt5::detail::codec(isa);
    v.push_back({c.decode, c.encode});
  }
  v.push_back({pt5::decode, pt5::encode});
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto impls = simd_impls();
  if (size == 0) return 0;
  // First byte: how many trits of the last packed byte are used (1..5).
  const size_t tail = 1 + data[0] % 5;
  const uint8_t* packed = data + 1;
  const size_t n_bytes = size - 1;
  const size_t n_trits = n_bytes == 0 ? 0 : 5 * (n_bytes - 1) + tail;

  std::vector<int8_t> ref(n_trits);
  const std::string ref_err = run([&] { pt5::detail::decode_scalar(packed, n_trits, ref.data()); });
  for (const auto& impl : impls) {
    std::vector<int8_t> got(n_trits);
    const std::string err = run([&] { impl.first(packed, n_trits, got.data()); });
    if (err != ref_err || (err.empty() && got != ref)) __builtin_trap();
  }
  if (ref_err.empty() && tail == 5 && n_bytes > 0) {  // full bytes: encoding gives them back
    std::vector<uint8_t> again(n_bytes);
    pt5::detail::encode_scalar(ref.data(), n_trits, again.data());
    if (std::memcmp(again.data(), packed, n_bytes) != 0) __builtin_trap();
  }

  // The same bytes read as trits (mostly invalid, some valid runs).
  const int8_t* trits = reinterpret_cast<const int8_t*>(packed);
  std::vector<int8_t> mapped(trits, trits + n_bytes);
  if (data[0] & 0x80)  // half of the time: fold into {-1,0,1}, so encode succeeds
    for (auto& t : mapped) t = static_cast<int8_t>(static_cast<uint8_t>(t) % 3 - 1);
  std::vector<uint8_t> enc_ref(pt5::packed_size(n_bytes));
  const std::string enc_err = run([&] { pt5::detail::encode_scalar(mapped.data(), n_bytes, enc_ref.data()); });
  for (const auto& impl : impls) {
    std::vector<uint8_t> got(enc_ref.size());
    const std::string err = run([&] { impl.second(mapped.data(), n_bytes, got.data()); });
    if (err != enc_err || (err.empty() && got != enc_ref)) __builtin_trap();
  }
  return 0;
}
