// The arguments of the tfmbs:: ternary ops: packings, activation modes, and
// the checks every kernel (CPU, tfmbs, Meta) runs on them.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "fabric/status.h"

namespace tfmbs {

enum class Packing { Pt5, T2b };
// How activations reach the lanes (fabric::ActivationKind): quantized per
// token to int8 or to ternary, or as float32.
enum class ActMode { Int8, Ternary, Fp32 };

Packing parse_packing(const std::string& s);
ActMode parse_act_mode(const std::string& s);
size_t packed_size(Packing p, size_t n);
const char* packing_name(Packing p);

// Runs a fabric codec call, turning its errors into Python ValueErrors.
template <typename Fn>
void run_codec(const char* op, Fn fn) {
  try {
    fn();
  } catch (const fabric::FabricError& e) {
    TORCH_CHECK_VALUE(false, op, ": ", e.what());
  }
}

// `packed` holds n trits in `packing` (uint8, the right byte count).
void check_packed(const at::Tensor& packed, int64_t n, Packing packing, const char* op);
// The packed weight of an out_features x in_features layer: uint8 with the
// packing's byte count (without overflow).
void check_packed_weight(const at::Tensor& packed, int64_t out_features, int64_t in_features,
                         Packing packing, const char* op);

struct LinearArgs {
  Packing packing;
  ActMode mode;
  int64_t m = 0, k = 0, n = 0;  // out features, in features, tokens
};

// Everything ternary_linear checks, on any device (Meta included).
LinearArgs check_linear(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                        const std::optional<at::Tensor>& bias, int64_t out_features,
                        int64_t in_features, const std::string& packing, const std::string& act_mode);

// input's shape with its last dimension replaced by m.
std::vector<int64_t> output_shape(const at::Tensor& input, int64_t m);

}  // namespace tfmbs
