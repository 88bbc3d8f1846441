// Internal: which kernel of a family with scalar, AVX2 and AVX-512 levels
// runs for an Isa (AMX, a superset of AVX-512, runs AVX-512's). Include it
// from files built without ISA flags only (fast_engine_kernels.h says why).
#pragma once

#include "fabric/cpu_features.h"

namespace tfmbs::fabric::fast_detail {

template <typename Fn>
Fn isa_kernel(Isa isa, Fn scalar, Fn avx2, Fn avx512) {
  switch (isa) {
    case Isa::Amx:
    case Isa::Avx512: return avx512;
    case Isa::Avx2: return avx2;
    case Isa::Scalar: break;
  }
  return scalar;
}

}  // namespace tfmbs::fabric::fast_detail
