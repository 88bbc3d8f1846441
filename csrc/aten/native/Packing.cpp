#include "aten/native/Packing.h"

#include <ATen/ATen.h>

#include <cstring>
#include <vector>

#include "aten/native/Common.h"
#include "aten/native/TernaryArgs.h"
#include "fabric/pt5_codec.h"
#include "fabric/t2b_codec.h"

namespace tfmbs {
namespace {

// Trits of a tensor whose values must all be -1, 0 or 1 (any real or
// integer dtype), as a contiguous CPU int8 tensor.
at::Tensor checked_trits(const at::Tensor& trits, const char* op) {
  at::Tensor t = host(trits);
  TORCH_CHECK_VALUE(!t.is_complex(), op, ": trits must be real, got ", t.scalar_type());
  at::Tensor as_int8 = t.scalar_type() == at::kChar ? t.contiguous() : t.to(at::kChar).contiguous();
  if (t.scalar_type() != at::kChar && t.scalar_type() != at::kBool && t.numel() > 0) {
    // Out of [-1, 1] (255 as uint8, 200) or not an integer (0.5, NaN).
    // Compared wide: a uint8 255 must not meet -1 wrapped to 255.
    const at::Tensor v = t.is_floating_point() ? t : t.to(at::kLong);
    at::Tensor bad = v.lt(-1).logical_or(v.gt(1));
    if (t.is_floating_point()) bad = bad.logical_or(t.ne(t.trunc()));
    if (bad.any().item<bool>()) {
      int64_t index = bad.reshape(-1).nonzero()[0][0].item<int64_t>();
      TORCH_CHECK_VALUE(false, op, ": element ", index, " is ", t.reshape(-1)[index].item().toDouble(),
                        "; ternary values are -1, 0 and 1");
    }
  }
  return as_int8;
}

at::Tensor pack_impl(const at::Tensor& trits, Packing packing) {
  const char* op = packing == Packing::Pt5 ? "tfmbs.pack_pt5" : "tfmbs.pack_t2b";
  at::Tensor t = checked_trits(trits, op);
  const size_t n = static_cast<size_t>(t.numel());
  at::Tensor out = at::empty({static_cast<int64_t>(packed_size(packing, n))},
                             trits.options().dtype(at::kByte));
  uint8_t* dst = host(out).data_ptr<uint8_t>();
  run_codec(op, [&] {
    if (packing == Packing::Pt5) fabric::pt5::encode(t.data_ptr<int8_t>(), n, dst);
    else fabric::t2b::encode(t.data_ptr<int8_t>(), n, dst);
  });
  return out;
}

at::Tensor unpack_impl(const at::Tensor& packed, int64_t n, Packing packing) {
  const char* op = packing == Packing::Pt5 ? "tfmbs.unpack_pt5" : "tfmbs.unpack_t2b";
  check_packed(packed, n, packing, op);
  at::Tensor src = host(packed).contiguous();
  // Decode into a scratch buffer first so a bad byte leaves no half result.
  std::vector<int8_t> trits(static_cast<size_t>(n));
  run_codec(op, [&] {
    if (packing == Packing::Pt5) fabric::pt5::decode(src.data_ptr<uint8_t>(), trits.size(), trits.data());
    else fabric::t2b::decode(src.data_ptr<uint8_t>(), trits.size(), trits.data());
  });
  at::Tensor out = at::empty({n}, packed.options().dtype(at::kChar));
  if (n > 0) std::memcpy(host(out).data_ptr<int8_t>(), trits.data(), trits.size());
  return out;
}

}  // namespace

at::Tensor pack_pt5(const at::Tensor& t) { return pack_impl(t, Packing::Pt5); }
at::Tensor pack_t2b(const at::Tensor& t) { return pack_impl(t, Packing::T2b); }
at::Tensor unpack_pt5(const at::Tensor& p, int64_t n) { return unpack_impl(p, n, Packing::Pt5); }
at::Tensor unpack_t2b(const at::Tensor& p, int64_t n) { return unpack_impl(p, n, Packing::T2b); }

namespace {

at::Tensor pack_meta(const at::Tensor& trits, Packing packing) {
  // numel may be symbolic: (n + 4) / 5 or (n + 3) / 4.
  c10::SymInt n = trits.sym_numel();
  c10::SymInt bytes = packing == Packing::Pt5 ? (n + 4) / 5 : (n + 3) / 4;
  return at::empty_symint({bytes}, trits.options().dtype(at::kByte));
}
}  // namespace

at::Tensor pack_pt5_meta(const at::Tensor& t) { return pack_meta(t, Packing::Pt5); }
at::Tensor pack_t2b_meta(const at::Tensor& t) { return pack_meta(t, Packing::T2b); }
at::Tensor unpack_meta(const at::Tensor& p, int64_t n) {
  TORCH_CHECK_VALUE(p.scalar_type() == at::kByte, "tfmbs.unpack: packed must be uint8, got ", p.scalar_type());
  return at::empty({n}, p.options().dtype(at::kChar));
}

}  // namespace tfmbs
