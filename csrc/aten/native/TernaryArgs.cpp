#include "aten/native/TernaryArgs.h"

#include <c10/util/safe_numerics.h>

#include "fabric/fast_frame.h"
#include "fabric/pt5_codec.h"
#include "fabric/t2b_codec.h"

namespace tfmbs {

Packing parse_packing(const std::string& s) {
  if (s == "pt5") return Packing::Pt5;
  if (s == "t2b") return Packing::T2b;
  TORCH_CHECK_VALUE(false, "tfmbs.ternary_linear: packing='", s, "' is not supported: use 'pt5' or 't2b'");
}

ActMode parse_act_mode(const std::string& s) {
  if (s == "int8") return ActMode::Int8;
  if (s == "ternary") return ActMode::Ternary;
  if (s == "fp32") return ActMode::Fp32;
  if (s == "none") {
    TORCH_WARN_ONCE("tfmbs.ternary_linear: act_mode='none' is deprecated; it is called 'fp32' (float32 "
                    "activations), as in fabric_tgemm");
    return ActMode::Fp32;
  }
  TORCH_CHECK_VALUE(false, "tfmbs.ternary_linear: act_mode='", s,
                    "' is not supported: use 'int8', 'ternary' or 'fp32'");
}

size_t packed_size(Packing p, size_t n) {
  return p == Packing::Pt5 ? fabric::pt5::packed_size(n) : fabric::t2b::packed_size(n);
}

const char* packing_name(Packing p) { return p == Packing::Pt5 ? "pt5" : "t2b"; }

void check_packed(const at::Tensor& packed, int64_t n, Packing packing, const char* op) {
  TORCH_CHECK_VALUE(packed.scalar_type() == at::kByte, op, ": packed must be uint8, got ",
                    packed.scalar_type());
  TORCH_CHECK_VALUE(n >= 0, op, ": n=", n, " must be >= 0");
  const int64_t need = static_cast<int64_t>(packed_size(packing, static_cast<size_t>(n)));
  TORCH_CHECK_VALUE(packed.numel() == need, op, ": a ", packing_name(packing), " tensor of ", n,
                    " trits has ", need, " bytes, got ", packed.numel());
}

void check_packed_weight(const at::Tensor& packed, int64_t out_features, int64_t in_features,
                         Packing packing, const char* op) {
  TORCH_CHECK_VALUE(packed.scalar_type() == at::kByte, op, ": packed_weight must be uint8, got ",
                    packed.scalar_type());
  TORCH_CHECK_VALUE(out_features >= 0 && in_features >= 0, op, ": out_features=", out_features,
                    " and in_features=", in_features, " must be >= 0");
  int64_t count = 0;
  TORCH_CHECK_VALUE(!c10::mul_overflows(out_features, in_features, &count), op, ": out_features=",
                    out_features, " x in_features=", in_features, " overflows a 64-bit count");
  const int64_t need = static_cast<int64_t>(packed_size(packing, static_cast<size_t>(count)));
  TORCH_CHECK_VALUE(packed.numel() == need, op, ": a ", packing_name(packing), " weight of ",
                    out_features, "x", in_features, " has ", need, " bytes, got a packed tensor of ",
                    packed.numel());
}

LinearArgs check_linear(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                        const std::optional<at::Tensor>& bias, int64_t out_features,
                        int64_t in_features, const std::string& packing, const std::string& act_mode) {
  constexpr const char* op = "tfmbs.ternary_linear";
  LinearArgs a;
  a.packing = parse_packing(packing);
  a.mode = parse_act_mode(act_mode);
  TORCH_CHECK_VALUE(out_features >= 0 && in_features >= 0, op, ": out_features=", out_features,
                    " and in_features=", in_features, " must be >= 0");
  TORCH_CHECK_VALUE(in_features <= fabric::kFastMaxCols, op, ": in_features=", in_features,
                    " exceeds the fabric's limit of ", fabric::kFastMaxCols);
  TORCH_CHECK_VALUE(input.dim() >= 1, op, ": input must have at least 1 dimension (..., in_features)");
  TORCH_CHECK_VALUE(input.size(-1) == in_features, op, ": input has ", input.size(-1),
                    " features in its last dimension (shape ", input.sizes(), ") but the layer has in_features=",
                    in_features);
  const auto dt = input.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, op,
                    ": input must be float32, bfloat16 or float16, got ", dt);
  check_packed_weight(packed, out_features, in_features, a.packing, op);
  TORCH_CHECK_VALUE(scale.is_floating_point(), op, ": scale must be floating point, got ", scale.scalar_type());
  TORCH_CHECK_VALUE(scale.numel() == 1 || (scale.dim() == 1 && scale.numel() == out_features), op,
                    ": scale must hold 1 value or out_features=", out_features, ", got shape ", scale.sizes());
  if (bias && bias->defined()) {
    TORCH_CHECK_VALUE(bias->is_floating_point(), op, ": bias must be floating point, got ", bias->scalar_type());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->numel() == out_features, op, ": bias must have shape [",
                      out_features, "], got ", bias->sizes());
  }
  // Same device for all, as aten ops require (a 0-dim CPU scale is fine).
  const c10::Device dev = input.device();
  auto same = [&](const at::Tensor& t, const char* name, bool scalar_ok) {
    if (!t.defined()) return;
    if (scalar_ok && t.device().is_cpu() && t.dim() == 0) return;
    TORCH_CHECK(t.device() == dev, op, ": expected all tensors on the same device, but input is on ", dev,
                " and ", name, " is on ", t.device());
  };
  same(packed, "packed_weight", false);
  same(scale, "scale", true);
  if (bias) same(*bias, "bias", false);
  a.m = out_features;
  a.k = in_features;
  a.n = 1;
  for (int64_t d = 0; d + 1 < input.dim(); ++d) a.n *= input.size(d);
  return a;
}

std::vector<int64_t> output_shape(const at::Tensor& input, int64_t m) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end() - 1);
  shape.push_back(m);
  return shape;
}

}  // namespace tfmbs
