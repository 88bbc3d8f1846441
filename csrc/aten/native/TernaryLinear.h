// tfmbs::ternary_linear, the op that puts a linear layer with ternary
// weights on the fabric, and its companions:
//
//   ternary_linear(input[..., K], packed W[M, K], scale, bias, M, K, packing,
//                  act_mode) -> [..., M]
//
// What the fabric computes (and what the CPU kernel computes too, so both
// agree to the bit for "int8" and "ternary", and for "fp32" as well since
// the CPU kernel replays the fp32 lanes' 16-bank order):
//   "int8"    per token (row of the flattened input): activations quantized
//             as fabric/activation_quant.h says, acc = W . x_q (int32,
//             wrapping), y = (float(acc) * factor) * scale[r] (+ bias[r]).
//   "ternary" per token: x_t = sign(x), factor = mean|x|, the same epilogue.
//   "fp32"    float32 activations ("none", deprecated, is the same): acc =
//             W . x (the fp32 lanes' bank order),
//             y = acc * scale[r] (+ bias[r]).
// scale is one value or one per output row; bias is per output row. Input
// float32, bfloat16 or float16 (computed in float32); the output has the
// input's dtype.
//
// On tfmbs the weights are a resident frame (native/TernaryFrames.h); the
// fast engine runs the call, or the lane-level reference engine
// (_set_linear_engine). Each call records its counters in the device's
// telemetry, and a row in the op log while a profiler records.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <string>
#include <vector>

namespace tfmbs {

at::Tensor ternary_linear_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                              const std::optional<at::Tensor>& bias, int64_t out_features,
                              int64_t in_features, c10::string_view packing, c10::string_view act_mode);
at::Tensor ternary_linear_tfmbs(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                                const std::optional<at::Tensor>& bias, int64_t out_features,
                                int64_t in_features, c10::string_view packing, c10::string_view act_mode);
at::Tensor ternary_linear_meta(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                               const std::optional<at::Tensor>& bias, int64_t out_features,
                               int64_t in_features, c10::string_view packing, c10::string_view act_mode);

// Builds (or finds) the resident frame ahead of the first call.
void prepare_frame_tfmbs(const at::Tensor& packed, int64_t out_features, int64_t in_features,
                         c10::string_view packing);
// CPU and Meta have no frames.
void prepare_frame_noop(const at::Tensor& packed, int64_t out_features, int64_t in_features,
                        c10::string_view packing);

// Which engine runs ternary_linear on tfmbs: "fast" | "reference"; returns
// the previous one.
std::string set_linear_engine(c10::string_view name);

}  // namespace tfmbs
