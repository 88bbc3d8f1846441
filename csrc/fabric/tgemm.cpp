#include "fabric/tgemm.h"

#include <stdexcept>
#include <string>

#include "fabric/reference_engine.h"

namespace tfmbs::fabric {

namespace {

OpCounters run_reference(const LaneMajorFrame& w, ActivationKind activations, const void* x, int64_t n, void* y) {
  switch (activations) {
    case ActivationKind::Int8:
      return reference::tgemm_int8(w, static_cast<const int8_t*>(x), n, static_cast<int32_t*>(y));
    case ActivationKind::Ternary:
      return reference::tgemm_ternary(w, static_cast<const int8_t*>(x), n, static_cast<int32_t*>(y));
    case ActivationKind::Fp32:
      return reference::tgemm_fp32(w, static_cast<const float*>(x), n, static_cast<float*>(y));
  }
  throw std::invalid_argument("TGEMM: unknown activation kind " + std::to_string(static_cast<int>(activations)));
}

}  // namespace

OpCounters run_tgemm(const FastEngine* fast, const FastFrame* fast_frame, const LaneMajorFrame* lane_major,
                     ActivationKind activations, const void* x, int64_t n, void* y, const RowsDone* done) {
  if (!fast) {
    const OpCounters counters = run_reference(*lane_major, activations, x, n, y);
    if (done) (*done)(0, lane_major->rows());
    return counters;
  }
  switch (activations) {
    case ActivationKind::Int8:
      return fast->tgemm_int8(*fast_frame, static_cast<const int8_t*>(x), n, static_cast<int32_t*>(y), done);
    case ActivationKind::Ternary:
      return fast->tgemm_ternary(*fast_frame, static_cast<const int8_t*>(x), n, static_cast<int32_t*>(y), done);
    case ActivationKind::Fp32:
      return fast->tgemm_fp32(*fast_frame, static_cast<const float*>(x), n, static_cast<float*>(y), done);
  }
  throw std::invalid_argument("TGEMM: unknown activation kind " + std::to_string(static_cast<int>(activations)));
}

}  // namespace tfmbs::fabric
