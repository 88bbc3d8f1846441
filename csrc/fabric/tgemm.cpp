#include "fabric/tgemm.h"

#include <stdexcept>
#include <string>

#include "fabric/reference_engine.h"

namespace tfmbs::fabric {

OpCounters run_tgemm(const FastEngine* fast, const FastFrame* fast_frame, const LaneMajorFrame* lane_major,
                     ActivationKind activations, const void* x, int64_t n, void* y) {
  switch (activations) {
    case ActivationKind::Int8: {
      auto xi = static_cast<const int8_t*>(x);
      auto yi = static_cast<int32_t*>(y);
      return fast ? fast->tgemm_int8(*fast_frame, xi, n, yi) : reference::tgemm_int8(*lane_major, xi, n, yi);
    }
    case ActivationKind::Ternary: {
      auto xi = static_cast<const int8_t*>(x);
      auto yi = static_cast<int32_t*>(y);
      return fast ? fast->tgemm_ternary(*fast_frame, xi, n, yi) : reference::tgemm_ternary(*lane_major, xi, n, yi);
    }
    case ActivationKind::Fp32: {
      auto xf = static_cast<const float*>(x);
      auto yf = static_cast<float*>(y);
      return fast ? fast->tgemm_fp32(*fast_frame, xf, n, yf) : reference::tgemm_fp32(*lane_major, xf, n, yf);
    }
  }
  throw std::invalid_argument("TGEMM: unknown activation kind " + std::to_string(static_cast<int>(activations)));
}

}  // namespace tfmbs::fabric
