// One ternary GEMM, y[n, rows] = x[n, cols] . W^T, on either engine for each
// activation kind: the one place that maps (engine, activations) to a
// kernel, for the driver and the layers above alike.
#pragma once

#include <cstdint>

#include "fabric/driver.h"  // ActivationKind
#include "fabric/fast_engine.h"
#include "fabric/fast_frame.h"
#include "fabric/lane_major_frame.h"
#include "fabric/telemetry.h"

namespace tfmbs::fabric {

// `fast` runs `fast_frame`; without it the reference engine runs
// `lane_major`. x is int8 (Int8, Ternary) or float (Fp32); y is int32 or
// float accordingly. done, if given, sees every output row once: from the
// fast engine's threads as they finish rows (RowsDone), else after the
// reference engine, as one range.
OpCounters run_tgemm(const FastEngine* fast, const FastFrame* fast_frame, const LaneMajorFrame* lane_major,
                     ActivationKind activations, const void* x, int64_t n, void* y,
                     const RowsDone* done = nullptr);

}  // namespace tfmbs::fabric
