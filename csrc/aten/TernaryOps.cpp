// The tfmbs:: operator library: its schemas and which kernel serves each
// dispatch key (the kernels are in csrc/aten/native). Ops whose kernel is
// the same on every device register once, as CompositeExplicitAutograd.
#include <torch/library.h>

#include "aten/native/Packing.h"
#include "aten/native/TernaryFrames.h"
#include "aten/native/TernaryLinear.h"

namespace tfmbs {

TORCH_LIBRARY(tfmbs, m) {
  m.def("pack_pt5(Tensor trits) -> Tensor");
  m.def("unpack_pt5(Tensor packed, int n) -> Tensor");
  m.def("pack_t2b(Tensor trits) -> Tensor");
  m.def("unpack_t2b(Tensor packed, int n) -> Tensor");
  m.def(
      "ternary_linear(Tensor input, Tensor packed_weight, Tensor scale, Tensor? bias, int out_features, "
      "int in_features, str packing=\"pt5\", str act_mode=\"int8\") -> Tensor");
  m.def("prepare_frame(Tensor packed_weight, int out_features, int in_features, str packing=\"pt5\") -> ()");
  m.def("_set_linear_engine(str engine) -> str", &set_linear_engine);
  m.def("_frame_cache_info() -> int[]", &frame_cache_info);
  m.def("_frame_cache_clear() -> ()", &frame_cache_clear);
}

// The codecs run on host views of either device's memory.
TORCH_LIBRARY_IMPL(tfmbs, CompositeExplicitAutograd, m) {
  m.impl("pack_pt5", &pack_pt5);
  m.impl("unpack_pt5", &unpack_pt5);
  m.impl("pack_t2b", &pack_t2b);
  m.impl("unpack_t2b", &unpack_t2b);
  m.impl("prepare_frame", &prepare_frame_noop);
}

TORCH_LIBRARY_IMPL(tfmbs, CPU, m) { m.impl("ternary_linear", &ternary_linear_cpu); }

TORCH_LIBRARY_IMPL(tfmbs, PrivateUse1, m) {
  m.impl("ternary_linear", &ternary_linear_tfmbs);
  m.impl("prepare_frame", &prepare_frame_tfmbs);
}

TORCH_LIBRARY_IMPL(tfmbs, Meta, m) {
  m.impl("pack_pt5", &pack_pt5_meta);
  m.impl("pack_t2b", &pack_t2b_meta);
  m.impl("unpack_pt5", &unpack_meta);
  m.impl("unpack_t2b", &unpack_meta);
  m.impl("ternary_linear", &ternary_linear_meta);
}

}  // namespace tfmbs
