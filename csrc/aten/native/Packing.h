// tfmbs::pack_pt5 / unpack_pt5 / pack_t2b / unpack_t2b: ternary values to
// and from the fabric's packings, the same kernels on CPU and tfmbs (the
// codecs run on host views), and their Meta kernels.
#pragma once

#include <ATen/core/Tensor.h>

namespace tfmbs {

at::Tensor pack_pt5(const at::Tensor& trits);
at::Tensor pack_t2b(const at::Tensor& trits);
at::Tensor unpack_pt5(const at::Tensor& packed, int64_t n);
at::Tensor unpack_t2b(const at::Tensor& packed, int64_t n);
at::Tensor pack_pt5_meta(const at::Tensor& trits);
at::Tensor pack_t2b_meta(const at::Tensor& trits);
at::Tensor unpack_meta(const at::Tensor& packed, int64_t n);

}  // namespace tfmbs
