// The levels a kernel with an AVX2 twin runs at on this machine (AVX-512
// machines run the AVX2 one): the tests hold each to the scalar version.
#pragma once

#include <vector>

#include "fabric/cpu_features.h"

namespace tfmbs::fabric {

inline std::vector<Isa> avx2_twin_levels() {
  std::vector<Isa> out{Isa::Scalar};
  if (cpu_supports(Isa::Avx2)) out.push_back(Isa::Avx2);
  return out;
}

}  // namespace tfmbs::fabric
