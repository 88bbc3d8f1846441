// The tfmbs::* operator library: PT-5 / T2B packing and ternary_linear, the
// op that puts a linear layer with ternary weights on the fabric.
//
//   ternary_linear(input[..., K], packed W[M, K], scale, bias, M, K, packing,
//                  act_mode) -> [..., M]
//
// What the fabric computes (and what the CPU kernel computes too, so both
// agree to the bit for "int8" and "ternary", and for "none" as well since
// the CPU kernel replays the fp32 lanes' 16-bank order):
//   "int8"    per token (row of the flattened input): a = max(max|x|, 1e-5),
//             x_q = clamp(round_half_even(x * (127 / a)), -127, 127) (the
//             BitNet b1.58 scheme), acc = W . x_q (int32, wrapping),
//             y = (float(acc) * (a / 127)) * scale[r] (+ bias[r]). A NaN
//             activation counts as 0.
//   "ternary" per token: x_t = sign(x), beta = mean|x| (summed in double),
//             acc = W . x_t, y = (float(acc) * beta) * scale[r] (+ bias[r]).
//   "none"    fp32 activations: acc = W . x (the fp32 lanes' bank order),
//             y = acc * scale[r] (+ bias[r]).
// scale is one value or one per output row; bias is per output row. Input
// float32, bfloat16 or float16 (computed in float32); the output has the
// input's dtype.
//
// On tfmbs the weights live in the fabric pool as a resident frame in the
// fast engine's layout, built once per packed tensor (keyed by its storage,
// offset and version counter) and reused by every later call: no repacking
// per call. A frame leaves the pool when its packed tensor changes, soon
// after it dies (at the next miss, within 256 calls, or at
// _frame_cache_info), or - least recently used first, and only if no call
// is using it - when any allocation finds the pool full (the pool's
// pressure handler; an eviction: the frame is rebuilt on its next use). Each call records its counters in the device's telemetry, and
// a row in the op log while a profiler records.
//
// Also here: prepare_frame (build the frame ahead of the first call) and
// small control ops for Python (_set_linear_engine: "fast" | "reference";
// _frame_cache_info / _frame_cache_clear; telemetry is read through
// torch_tfmbs.fabric).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/intrusive_ptr.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "aten/CpuAlias.h"
#include "aten/SharedStorages.h"
#include "device/OpLog.h"
#include "device/TfmbsDevices.h"
#include "fabric/fabric_pool.h"
#include "fabric/fast_engine.h"
#include "fabric/fast_frame.h"
#include "fabric/lane_major_frame.h"
#include "fabric/pt5_codec.h"
#include "fabric/reference_engine.h"
#include "fabric/status.h"
#include "fabric/t2b_codec.h"

namespace tfmbs {
namespace {

constexpr auto kTfmbs = c10::DeviceType::PrivateUse1;

// ---------------------------------------------------------------- helpers

// A CPU tensor over the same memory (the pool is host memory), or `t`.
at::Tensor host(const at::Tensor& t) {
  return t.defined() && t.device().type() == kTfmbs ? cpu_alias(t) : t;
}

enum class Packing { Pt5, T2b };
enum class ActMode { Int8, Ternary, None };

Packing parse_packing(const std::string& s) {
  if (s == "pt5") return Packing::Pt5;
  if (s == "t2b") return Packing::T2b;
  TORCH_CHECK_VALUE(false, "tfmbs.ternary_linear: packing='", s, "' is not supported: use 'pt5' or 't2b'");
}

ActMode parse_act_mode(const std::string& s) {
  if (s == "int8") return ActMode::Int8;
  if (s == "ternary") return ActMode::Ternary;
  if (s == "none") return ActMode::None;
  TORCH_CHECK_VALUE(false, "tfmbs.ternary_linear: act_mode='", s,
                    "' is not supported: use 'int8', 'ternary' or 'none'");
}

size_t packed_size(Packing p, size_t n) {
  return p == Packing::Pt5 ? fabric::pt5::packed_size(n) : fabric::t2b::packed_size(n);
}

const char* packing_name(Packing p) { return p == Packing::Pt5 ? "pt5" : "t2b"; }

// Trits of a tensor whose values must all be -1, 0 or 1 (any real or
// integer dtype), as a contiguous CPU int8 tensor.
at::Tensor checked_trits(const at::Tensor& trits, const char* op) {
  at::Tensor t = host(trits);
  TORCH_CHECK_VALUE(!t.is_complex(), op, ": trits must be real, got ", t.scalar_type());
  at::Tensor as_int8 = t.scalar_type() == at::kChar ? t.contiguous() : t.to(at::kChar).contiguous();
  if (t.scalar_type() != at::kChar && t.scalar_type() != at::kBool && t.numel() > 0) {
    // Out of [-1, 1] (255 as uint8, 200) or not an integer (0.5, NaN).
    // Compared wide: a uint8 255 must not meet -1 wrapped to 255.
    const at::Tensor v = t.is_floating_point() ? t : t.to(at::kLong);
    at::Tensor bad = v.lt(-1).logical_or(v.gt(1));
    if (t.is_floating_point()) bad = bad.logical_or(t.ne(t.trunc()));
    if (bad.any().item<bool>()) {
      int64_t index = bad.reshape(-1).nonzero()[0][0].item<int64_t>();
      TORCH_CHECK_VALUE(false, op, ": element ", index, " is ", t.reshape(-1)[index].item().toDouble(),
                        "; ternary values are -1, 0 and 1");
    }
  }
  return as_int8;
}

// Runs a fabric codec call, turning its errors into Python ValueErrors.
template <typename Fn>
void run_codec(const char* op, Fn fn) {
  try {
    fn();
  } catch (const fabric::FabricError& e) {
    TORCH_CHECK_VALUE(false, op, ": ", e.what());
  }
}

at::Tensor pack_impl(const at::Tensor& trits, Packing packing) {
  const char* op = packing == Packing::Pt5 ? "tfmbs.pack_pt5" : "tfmbs.pack_t2b";
  at::Tensor t = checked_trits(trits, op);
  const size_t n = static_cast<size_t>(t.numel());
  at::Tensor out = at::empty({static_cast<int64_t>(packed_size(packing, n))},
                             trits.options().dtype(at::kByte));
  uint8_t* dst = host(out).data_ptr<uint8_t>();
  run_codec(op, [&] {
    if (packing == Packing::Pt5) fabric::pt5::encode(t.data_ptr<int8_t>(), n, dst);
    else fabric::t2b::encode(t.data_ptr<int8_t>(), n, dst);
  });
  return out;
}

void check_packed(const at::Tensor& packed, int64_t n, Packing packing, const char* op) {
  TORCH_CHECK_VALUE(packed.scalar_type() == at::kByte, op, ": packed must be uint8, got ",
                    packed.scalar_type());
  TORCH_CHECK_VALUE(n >= 0, op, ": n=", n, " must be >= 0");
  const int64_t need = static_cast<int64_t>(packed_size(packing, static_cast<size_t>(n)));
  TORCH_CHECK_VALUE(packed.numel() == need, op, ": a ", packing_name(packing), " tensor of ", n,
                    " trits has ", need, " bytes, got ", packed.numel());
}

at::Tensor unpack_impl(const at::Tensor& packed, int64_t n, Packing packing) {
  const char* op = packing == Packing::Pt5 ? "tfmbs.unpack_pt5" : "tfmbs.unpack_t2b";
  check_packed(packed, n, packing, op);
  at::Tensor src = host(packed).contiguous();
  // Decode into a scratch buffer first so a bad byte leaves no half result.
  std::vector<int8_t> trits(static_cast<size_t>(n));
  run_codec(op, [&] {
    if (packing == Packing::Pt5) fabric::pt5::decode(src.data_ptr<uint8_t>(), trits.size(), trits.data());
    else fabric::t2b::decode(src.data_ptr<uint8_t>(), trits.size(), trits.data());
  });
  at::Tensor out = at::empty({n}, packed.options().dtype(at::kChar));
  if (n > 0) std::memcpy(host(out).data_ptr<int8_t>(), trits.data(), trits.size());
  return out;
}

at::Tensor pack_pt5(const at::Tensor& t) { return pack_impl(t, Packing::Pt5); }
at::Tensor pack_t2b(const at::Tensor& t) { return pack_impl(t, Packing::T2b); }
at::Tensor unpack_pt5(const at::Tensor& p, int64_t n) { return unpack_impl(p, n, Packing::Pt5); }
at::Tensor unpack_t2b(const at::Tensor& p, int64_t n) { return unpack_impl(p, n, Packing::T2b); }

at::Tensor pack_meta(const at::Tensor& trits, Packing packing) {
  // numel may be symbolic: (n + 4) / 5 or (n + 3) / 4.
  c10::SymInt n = trits.sym_numel();
  c10::SymInt bytes = packing == Packing::Pt5 ? (n + 4) / 5 : (n + 3) / 4;
  return at::empty_symint({bytes}, trits.options().dtype(at::kByte));
}
at::Tensor pack_pt5_meta(const at::Tensor& t) { return pack_meta(t, Packing::Pt5); }
at::Tensor pack_t2b_meta(const at::Tensor& t) { return pack_meta(t, Packing::T2b); }
at::Tensor unpack_meta(const at::Tensor& p, int64_t n) {
  TORCH_CHECK_VALUE(p.scalar_type() == at::kByte, "tfmbs.unpack: packed must be uint8, got ", p.scalar_type());
  return at::empty({n}, p.options().dtype(at::kChar));
}

// ----------------------------------------------------- argument checking

struct LinearArgs {
  Packing packing;
  ActMode mode;
  int64_t m = 0, k = 0, n = 0;  // out features, in features, tokens
};

// The packed weight of an out_features x in_features layer: uint8 with the
// packing's byte count (without overflow).
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

// ------------------------------------------- shared activation / epilogue

// The activations of one call in the form the lanes take, with the
// per-token factor the epilogue multiplies by.
struct Activations {
  std::vector<int8_t> q;     // int8 / ternary modes, [n, k]
  std::vector<float> token;  // per-token factor, [n]
};

// Rows run in parallel only when there is enough work to pay for waking
// the OpenMP workers (these are 2-core machines).
constexpr int64_t kParallelElements = int64_t{1} << 20;

template <typename Fn>
void for_rows(int64_t rows, int64_t row_elements, Fn fn) {
  if (rows * row_elements < kParallelElements) {
    fn(0, rows);
    return;
  }
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelElements / 4 / std::max<int64_t>(row_elements, 1)), fn);
}

// One token, int8 mode: a = max(max|x|, 1e-5), q = clamp(round(x * (127 /
// a)), -127, 127), round = ties to even (torch.round); NaN becomes 0.
// Clamping before rounding equals rounding before clamping (the bounds are
// integers). The AVX2 and scalar versions give identical bytes: max is
// exact, the product is one IEEE multiply, and adding and subtracting
// 1.5 * 2^23 rounds |v| < 2^22 to nearest-even exactly as vroundps does.
void quantize_row_int8_scalar(const float* __restrict x, int64_t k, int8_t* __restrict q, float* token) {
  float amax = 0.0f;
  for (int64_t d = 0; d < k; ++d) {
    const float a = std::fabs(x[d]);
    amax = a > amax ? a : amax;
  }
  const float a = amax > 1e-5f ? amax : 1e-5f;
  const float inv = 127.0f / a;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  for (int64_t d = 0; d < k; ++d) {
    float v = x[d] * inv;
    v = v == v ? v : 0.0f;
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    v = (v + kRound) - kRound;
    q[d] = static_cast<int8_t>(static_cast<int32_t>(v));
  }
  *token = a / 127.0f;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void quantize_row_int8_avx2(const float* __restrict x, int64_t k,
                                                             int8_t* __restrict q, float* token) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t d = 0;
  // max_ps returns its second operand when either is NaN: NaNs are ignored,
  // as in the scalar loop.
  for (; d + 8 <= k; d += 8) vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + d), abs_mask), vmax);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.0f;
  for (float l : lanes) amax = l > amax ? l : amax;
  for (; d < k; ++d) {
    const float a = std::fabs(x[d]);
    amax = a > amax ? a : amax;
  }
  const float a = amax > 1e-5f ? amax : 1e-5f;
  const float inv = 127.0f / a;
  const __m256 vinv = _mm256_set1_ps(inv), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
  for (d = 0; d + 8 <= k; d += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + d), vinv);
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
    v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
    const __m256i i = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + d), _mm_packs_epi16(p16, p16));
  }
  constexpr float kRound = 12582912.0f;
  for (; d < k; ++d) {
    float v = x[d] * inv;
    v = v == v ? v : 0.0f;
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    v = (v + kRound) - kRound;
    q[d] = static_cast<int8_t>(static_cast<int32_t>(v));
  }
  *token = a / 127.0f;
}
#endif

void quantize_row_int8(const float* x, int64_t k, int8_t* q, float* token) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return quantize_row_int8_avx2(x, k, q, token);
#endif
  quantize_row_int8_scalar(x, k, q, token);
}

void quantize_row_ternary(const float* __restrict x, int64_t k, int8_t* __restrict q, float* token) {
  double sum = 0.0;
  for (int64_t d = 0; d < k; ++d) sum += std::fabs(static_cast<double>(x[d]));
  for (int64_t d = 0; d < k; ++d) q[d] = static_cast<int8_t>((x[d] > 0.0f) - (x[d] < 0.0f));
  *token = k > 0 ? static_cast<float>(sum / static_cast<double>(k)) : 0.0f;
}

void quantize(ActMode mode, const float* x, int64_t n, int64_t k, Activations& out) {
  out.q.resize(static_cast<size_t>(n * k));
  out.token.resize(static_cast<size_t>(n));
  for_rows(n, k, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (mode == ActMode::Int8) quantize_row_int8(x + b * k, k, out.q.data() + b * k, &out.token[b]);
      else quantize_row_ternary(x + b * k, k, out.q.data() + b * k, &out.token[b]);
    }
  });
}

// y[b, r] from the lanes' accumulators: separate roundings (mul, mul, add),
// identical in the CPU and tfmbs kernels.
template <typename Acc>
void epilogue_row(const Acc* __restrict a, float t, const float* __restrict scale, bool per_row,
                  const float* __restrict bias, int64_t m, float* __restrict y) {
  if (per_row) {
    for (int64_t r = 0; r < m; ++r) y[r] = (static_cast<float>(a[r]) * t) * scale[r];
  } else {
    const float s = scale[0];
    for (int64_t r = 0; r < m; ++r) y[r] = (static_cast<float>(a[r]) * t) * s;
  }
  if (bias)
    for (int64_t r = 0; r < m; ++r) y[r] = y[r] + bias[r];
}

template <typename Acc>
void epilogue(const Acc* acc, const float* token, const float* scale, bool per_row_scale,
              const float* bias, int64_t n, int64_t m, float* y) {
  for_rows(n, m, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (token) {
        epilogue_row(acc + b * m, token[b], scale, per_row_scale, bias, m, y + b * m);
      } else {
        // fp activations: no per-token factor (multiplying by 1 is exact)
        epilogue_row(acc + b * m, 1.0f, scale, per_row_scale, bias, m, y + b * m);
      }
    }
  });
}

struct HostOperands {
  at::Tensor x;      // float32 contiguous [n, k] (CPU view or copy)
  at::Tensor scale;  // float32 contiguous
  at::Tensor bias;   // float32 contiguous or undefined
};

HostOperands host_operands(const at::Tensor& input, const at::Tensor& scale,
                           const std::optional<at::Tensor>& bias, const LinearArgs& a) {
  HostOperands h;
  h.x = host(input).reshape({a.n, a.k}).to(at::kFloat).contiguous();
  h.scale = host(scale).to(at::kFloat).contiguous().reshape(-1);
  if (bias && bias->defined()) h.bias = host(*bias).to(at::kFloat).contiguous();
  return h;
}

// Writes the float32 result into a new tensor like `input` (its device and
// dtype) of shape [..., m].
at::Tensor make_output(const at::Tensor& input, int64_t m, const at::Tensor& y32) {
  at::Tensor out = at::empty(output_shape(input, m), input.options());
  at::Tensor dst = host(out);
  if (out.numel() > 0) dst.view({-1, m}).copy_(y32.view({-1, m}));
  return out;
}

// ------------------------------------------------------------- CPU kernel

// The fp32 lane's 16 banks over one weight row and one activation row:
// step d adds +-x[d] to bank d % 16 unless w[d] == 0 or x[d] == 0 (a skip).
// The AVX2 version keeps the 16 banks in two registers and selects instead
// of branching; same additions in the same order, so identical results.
void fp32_lane_banks_scalar(const int8_t* w, const float* x, int64_t k, float* bank) {
  for (int64_t d = 0; d < k; ++d) {
    const int wv = w[d];
    const float xv = x[d];
    if (wv == 0 || xv == 0.0f) continue;
    bank[d % 16] = wv > 0 ? bank[d % 16] + xv : bank[d % 16] - xv;
  }
}

#if defined(__x86_64__)
// 8 banks, 8 steps: w8's low 8 bytes are the weights.
__attribute__((target("avx2"))) inline __m256 fp32_lane_step_avx2(__m256 bank, __m128i w8, const float* xp) {
  const __m256i wi = _mm256_cvtepi8_epi32(w8);
  const __m256 xv = _mm256_loadu_ps(xp);
  const __m256 pos = _mm256_castsi256_ps(_mm256_cmpgt_epi32(wi, _mm256_setzero_si256()));
  const __m256 wz = _mm256_castsi256_ps(_mm256_cmpeq_epi32(wi, _mm256_setzero_si256()));
  const __m256 xz = _mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_EQ_OQ);  // NaN is not a zero
  const __m256 add = _mm256_blendv_ps(_mm256_xor_ps(xv, _mm256_set1_ps(-0.0f)), xv, pos);  // w>0 ? x : -x
  return _mm256_blendv_ps(_mm256_add_ps(bank, add), bank, _mm256_or_ps(wz, xz));
}

__attribute__((target("avx2"))) void fp32_lane_banks_avx2(const int8_t* w, const float* x, int64_t k,
                                                           float* bank) {
  __m256 b0 = _mm256_loadu_ps(bank), b1 = _mm256_loadu_ps(bank + 8);
  int64_t d = 0;
  for (; d + 16 <= k; d += 16) {
    const __m128i w16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + d));
    b0 = fp32_lane_step_avx2(b0, w16, x + d);
    b1 = fp32_lane_step_avx2(b1, _mm_srli_si128(w16, 8), x + d + 8);
  }
  _mm256_storeu_ps(bank, b0);
  _mm256_storeu_ps(bank + 8, b1);
  // the tail starts at a multiple of 16: bank index = d % 16 as before
  fp32_lane_banks_scalar(w + d, x + d, k - d, bank);
}
#endif

void fp32_lane_banks(const int8_t* w, const float* x, int64_t k, float* bank) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return fp32_lane_banks_avx2(w, x, k, bank);
#endif
  fp32_lane_banks_scalar(w, x, k, bank);
}


// The reference: decode the weights, run the lanes' arithmetic with plain
// loops (independent of the fabric engines), same quantization/epilogue.
at::Tensor ternary_linear_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                              const std::optional<at::Tensor>& bias, int64_t out_features,
                              int64_t in_features, c10::string_view packing, c10::string_view act_mode) {
  const LinearArgs a = check_linear(input, packed, scale, bias, out_features, in_features,
                                    std::string(packing), std::string(act_mode));
  const int64_t n = a.n, m = a.m, k = a.k;
  at::Tensor w = unpack_impl(packed.reshape(-1), m * k, a.packing);  // int8 [m*k]
  const int8_t* wt = w.data_ptr<int8_t>();
  HostOperands h = host_operands(input, scale, bias, a);
  const float* sc = h.scale.data_ptr<float>();
  const bool per_row = h.scale.numel() > 1;
  const float* bs = h.bias.defined() ? h.bias.data_ptr<float>() : nullptr;
  at::Tensor y = at::empty({n, m}, at::kFloat);
  if (a.mode == ActMode::None) {
    std::vector<float> acc(static_cast<size_t>(n * m));
    const float* x = h.x.data_ptr<float>();
    at::parallel_for(0, m, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < n; ++b) {
          // The fp32 lane: 16 banks (step d -> bank d % 16), zero-skip on
          // either operand, then the fixed reduction tree.
          float bank[16] = {};
          fp32_lane_banks(wt + r * k, x + b * k, k, bank);
          for (int s = 8; s >= 1; s /= 2)
            for (int j = 0; j < s; ++j) bank[j] = bank[j] + bank[j + s];
          acc[static_cast<size_t>(b * m + r)] = bank[0];
        }
      }
    });
    epilogue(acc.data(), nullptr, sc, per_row, bs, n, m, y.data_ptr<float>());
  } else {
    Activations act;
    quantize(a.mode, h.x.data_ptr<float>(), n, k, act);
    std::vector<int32_t> acc(static_cast<size_t>(n * m));
    at::parallel_for(0, m, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < n; ++b) {
          uint32_t s = 0;  // the lane's int32 accumulator, wrapping
          const int8_t* xr = act.q.data() + b * k;
          for (int64_t d = 0; d < k; ++d)
            s += static_cast<uint32_t>(static_cast<int32_t>(wt[r * k + d]) * xr[d]);
          acc[static_cast<size_t>(b * m + r)] = static_cast<int32_t>(s);
        }
      }
    });
    epilogue(acc.data(), act.token.data(), sc, per_row, bs, n, m, y.data_ptr<float>());
  }
  return make_output(input, m, y);
}

// ------------------------------------------------- resident frame cache

enum class Engine { Fast, Reference };
std::atomic<Engine> g_engine{Engine::Fast};

struct FrameKey {
  const c10::StorageImpl* storage;
  int64_t offset, rows, cols;
  Packing packing;
  bool operator<(const FrameKey& o) const {
    return std::tie(storage, offset, rows, cols, packing) <
           std::tie(o.storage, o.offset, o.rows, o.cols, o.packing);
  }
};

// How a cached frame is known to still hold the packed tensor's contents.
// Version: the tensor's version counter, which every in-place write through
// it or its views bumps. Fingerprint: a hash of the packed bytes, for
// tensors whose writes no version counter sees (inference tensors, and
// storages that set_ shares with tensors of other counters).
enum class Tracking { Version, Fingerprint };

struct CachedFrame {
  explicit CachedFrame(c10::weak_intrusive_ptr<c10::StorageImpl> o) : owner(std::move(o)) {}
  c10::weak_intrusive_ptr<c10::StorageImpl> owner;  // also keeps the key's address unique
  Tracking tracking = Tracking::Version;
  uint64_t state = 0;     // the version, or the fingerprint, the frame was built from
  uint64_t last_use = 0;  // for least-recently-used eviction under pool pressure
  const void* data = nullptr;
  c10::DeviceIndex device = 0;
  std::shared_ptr<fabric::FastFrame> fast;
  std::shared_ptr<fabric::LaneMajorFrame> lane_major;  // built on first reference-engine use
  std::vector<int8_t> trits_for_reference;              // kept only until lane_major exists
};

std::mutex g_cache_mutex;
auto* g_cache = new std::map<FrameKey, std::shared_ptr<CachedFrame>>;  // leaked, as every singleton
uint64_t g_tick = 0;  // under g_cache_mutex

// A 64-bit hash of `bytes` (four independent multiply-xor lanes, so it runs
// near memory bandwidth).
uint64_t fingerprint(const uint8_t* bytes, size_t n) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h[4] = {n, kMul, ~n, kMul ^ n};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int j = 0; j < 4; ++j) {
      uint64_t w;
      std::memcpy(&w, bytes + i + 8 * j, 8);
      h[j] = (h[j] ^ w) * kMul;
      h[j] ^= h[j] >> 29;
    }
  }
  uint64_t tail = 0;
  for (; i < n; ++i) tail = (tail << 8) | bytes[i];
  uint64_t r = (h[0] * 31 + h[1]) * 31 + h[2];
  r = ((r * 31 + h[3]) ^ tail) * kMul;
  return r ^ (r >> 32);
}

Tracking tracking_of(const at::Tensor& packed) {
  return packed.is_inference() || is_shared_by_set(packed.storage()) ? Tracking::Fingerprint
                                                                     : Tracking::Version;
}

uint64_t state_of(const at::Tensor& packed, Tracking tracking) {
  if (tracking == Tracking::Version) {
    return packed.unsafeGetTensorImpl()->version_counter().current_version();
  }
  return fingerprint(static_cast<const uint8_t*>(packed.const_data_ptr()),
                     static_cast<size_t>(packed.nbytes()));
}

// Drops entries whose packed tensor is gone (their frames leave the pool).
void sweep_dead_locked() {
  for (auto it = g_cache->begin(); it != g_cache->end();) {
    if (it->second->owner.expired()) it = g_cache->erase(it);
    else ++it;
  }
}

std::vector<int8_t> decode_weights(const at::Tensor& packed, const LinearArgs& a) {
  std::vector<int8_t> trits(static_cast<size_t>(a.m * a.k));
  const uint8_t* src = static_cast<const uint8_t*>(packed.const_data_ptr());
  run_codec("tfmbs.ternary_linear: packed_weight", [&] {
    if (a.packing == Packing::Pt5) fabric::pt5::decode(src, trits.size(), trits.data());
    else fabric::t2b::decode(src, trits.size(), trits.data());
  });
  return trits;
}

// Evicts the least recently used frame of device `dev` that no call is
// using (the cache holds the only reference); its weights are rebuilt on
// their next use. Returns the pool bytes freed (0: nothing to evict).
size_t evict_one_locked(c10::DeviceIndex dev) {
  auto victim = g_cache->end();
  for (auto it = g_cache->begin(); it != g_cache->end(); ++it) {
    const auto& e = it->second;
    if (e->device != dev || e.use_count() != 1) continue;
    if (victim == g_cache->end() || e->last_use < victim->second->last_use) victim = it;
  }
  if (victim == g_cache->end()) return 0;
  const CachedFrame& frame = *victim->second;
  size_t bytes = (frame.fast ? frame.fast->bytes() : 0) +
                 (frame.lane_major ? frame.lane_major->size() : 0);
  if (!frame.owner.expired()) device_telemetry(dev).add_eviction();
  g_cache->erase(victim);
  return std::max<size_t>(bytes, 1);
}

// The device pool's pressure handler: any allocation that finds the pool
// full (a tensor, a frame) first makes cached frames give way, least
// recently used first, before the pool raises out-of-memory. Frames are
// never built or freed into the pool with this lock held by an allocating
// thread, so the handler cannot deadlock.
size_t evict_for_pressure(c10::DeviceIndex dev, size_t needed) {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  sweep_dead_locked();
  size_t freed = 0;
  while (freed < needed) {
    size_t bytes = evict_one_locked(dev);
    if (bytes == 0) break;
    freed += bytes;
  }
  return freed;
}

void install_pressure_handler(c10::DeviceIndex dev) {
  static std::mutex mutex;
  static std::vector<bool>* installed = new std::vector<bool>;  // leaked, as every singleton
  std::lock_guard<std::mutex> lock(mutex);
  if (installed->size() <= static_cast<size_t>(dev)) installed->resize(dev + 1, false);
  if ((*installed)[dev]) return;
  device_pool(dev).set_pressure_handler([dev](size_t needed) { return evict_for_pressure(dev, needed); });
  (*installed)[dev] = true;
}

// Builds a frame in device `dev`'s pool (the pool's pressure handler has
// evicted what it could before this fails).
template <typename Fn>
auto build_in_pool(c10::DeviceIndex dev, Fn fn) -> decltype(fn()) {
  install_pressure_handler(dev);
  try {
    return fn();
  } catch (const fabric::OutOfMemory& e) {
    TORCH_CHECK_WITH(OutOfMemoryError, false,
                     "tfmbs.ternary_linear: no room for the weight frame (no unused cached frame left to evict): ",
                     e.what());
  }
}

// Builds the frame of contiguous `packed` in its device's pool (uncached).
std::shared_ptr<CachedFrame> build_frame(const at::Tensor& packed, const LinearArgs& a, bool need_lane_major) {
  const c10::DeviceIndex dev = packed.device().index();
  auto frame = std::make_shared<CachedFrame>(packed.storage().getWeakStorageImpl());
  frame->data = packed.const_data_ptr();
  frame->device = dev;
  std::vector<int8_t> trits = decode_weights(packed, a);
  const int tiles = static_cast<int>(fabric_config().tiles);
  frame->fast = build_in_pool(dev, [&] {
    return std::make_shared<fabric::FastFrame>(
        fabric::FastFrame::from_trits(trits.data(), a.m, a.k, tiles, &device_pool(dev)));
  });
  if (need_lane_major) frame->trits_for_reference = std::move(trits);
  return frame;
}

// Gives `frame` the reference engine's lane-major layout (once).
void attach_lane_major(CachedFrame& frame, const LinearArgs& a) {
  std::vector<int8_t> trits;
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    if (frame.lane_major) return;
    trits = std::move(frame.trits_for_reference);
    frame.trits_for_reference.clear();
  }
  if (trits.empty()) trits = frame.fast->to_trits();
  const int tiles = static_cast<int>(fabric_config().tiles);
  const c10::DeviceIndex dev = frame.device;
  auto lane_major = build_in_pool(dev, [&] {
    return std::make_shared<fabric::LaneMajorFrame>(
        fabric::LaneMajorFrame::from_trits(trits.data(), a.m, a.k, tiles, &device_pool(dev)));
  });
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  if (!frame.lane_major) frame.lane_major = std::move(lane_major);
}

// A frame for one call, never cached.
std::shared_ptr<CachedFrame> resident_frame_uncached(const at::Tensor& packed, const LinearArgs& a,
                                                     bool need_lane_major) {
  device_telemetry(packed.device().index()).add_residency_miss();
  std::shared_ptr<CachedFrame> frame = build_frame(packed, a, need_lane_major);
  if (need_lane_major) attach_lane_major(*frame, a);
  return frame;
}

// The resident frame of `packed` on its device: built once, reused while
// the packed bytes are known unchanged (see Tracking). A packed tensor that
// is not contiguous (a strided or expanded view) gets a frame for this call.
std::shared_ptr<CachedFrame> resident_frame(const at::Tensor& packed, const LinearArgs& a, bool need_lane_major) {
  check_allocated(packed);
  if (!packed.is_contiguous()) {
    return resident_frame_uncached(packed.contiguous(), a, need_lane_major);
  }
  const c10::DeviceIndex dev = packed.device().index();
  auto& telemetry = device_telemetry(dev);
  c10::StorageImpl* storage = packed.storage().unsafeGetStorageImpl();
  const FrameKey key{storage, packed.storage_offset(), a.m, a.k, a.packing};
  const Tracking tracking = tracking_of(packed);
  const uint64_t state = state_of(packed, tracking);
  const void* data = packed.const_data_ptr();
  std::shared_ptr<CachedFrame> entry;
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = g_cache->find(key);
    if (it != g_cache->end()) {
      const auto& e = it->second;
      if (!e->owner.expired() && e->tracking == tracking && e->state == state && e->data == data &&
          e->device == dev) {
        entry = e;
      } else {
        if (!e->owner.expired()) telemetry.add_eviction();  // the weights changed
        g_cache->erase(it);
      }
    }
    // Frames of packed tensors that died leave the pool at the next miss,
    // or within 256 calls.
    static uint32_t calls = 0;
    if (!entry || (++calls & 255) == 0) sweep_dead_locked();
  }
  if (entry) {
    telemetry.add_residency_hit();
  } else {
    telemetry.add_residency_miss();
    auto fresh = build_frame(packed, a, need_lane_major);
    fresh->tracking = tracking;
    fresh->state = state;
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    (*g_cache)[key] = fresh;
    entry = fresh;
  }
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    entry->last_use = ++g_tick;
  }
  if (need_lane_major) attach_lane_major(*entry, a);
  return entry;
}

// ---------------------------------------------------------- tfmbs kernel

// Accumulator scratch: a per-thread buffer that only grows (no allocation
// and page faults per call), up to 16 MiB; bigger calls use `local`.
template <typename T>
T* scratch_buffer(std::vector<T>& local, size_t count) {
  thread_local std::vector<T> cached;
  if (count * sizeof(T) <= (size_t{16} << 20)) {
    if (cached.size() < count) cached.resize(count);
    return cached.data();
  }
  local.resize(count);
  return local.data();
}

std::string shapes_of(const at::Tensor& input, const LinearArgs& a) {
  std::ostringstream s;
  s << input.sizes() << ", [" << a.m << ", " << a.k << "] " << packing_name(a.packing);
  return s.str();
}

at::Tensor ternary_linear_tfmbs(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                                const std::optional<at::Tensor>& bias, int64_t out_features,
                                int64_t in_features, c10::string_view packing, c10::string_view act_mode) {
  const auto start = std::chrono::steady_clock::now();
  const LinearArgs a = check_linear(input, packed, scale, bias, out_features, in_features,
                                    std::string(packing), std::string(act_mode));
  TORCH_CHECK(input.device().type() == kTfmbs, "tfmbs.ternary_linear: the tfmbs kernel got input on ",
              input.device());
  const c10::DeviceIndex dev = input.device().index();
  const Engine engine = g_engine.load();
  const bool reference = engine == Engine::Reference;
  std::shared_ptr<CachedFrame> frame = resident_frame(packed, a, reference);
  const int64_t n = a.n, m = a.m, k = a.k;
  HostOperands h = host_operands(input, scale, bias, a);
  const float* sc = h.scale.data_ptr<float>();
  const bool per_row = h.scale.numel() > 1;
  const float* bs = h.bias.defined() ? h.bias.data_ptr<float>() : nullptr;
  const bool direct = input.scalar_type() == at::kFloat;
  at::Tensor out = at::empty(output_shape(input, m), input.options());
  // float32 output: the epilogue writes straight into device memory.
  at::Tensor y = direct ? host(out).view({n, m}) : at::empty({n, m}, at::kFloat);
  fabric::OpCounters counters;
  try {
    if (a.mode == ActMode::None) {
      std::vector<float> big;
      float* acc = scratch_buffer(big, static_cast<size_t>(n * m));
      const float* x = h.x.data_ptr<float>();
      counters = reference ? fabric::reference::tgemm_fp32(*frame->lane_major, x, n, acc)
                           : tfmbs::fast_engine().tgemm_fp32(*frame->fast, x, n, acc);
      epilogue(acc, nullptr, sc, per_row, bs, n, m, y.data_ptr<float>());
    } else {
      thread_local Activations act;
      quantize(a.mode, h.x.data_ptr<float>(), n, k, act);
      std::vector<int32_t> big;
      int32_t* acc = scratch_buffer(big, static_cast<size_t>(n * m));
      if (a.mode == ActMode::Int8) {
        counters = reference ? fabric::reference::tgemm_int8(*frame->lane_major, act.q.data(), n, acc)
                             : tfmbs::fast_engine().tgemm_int8(*frame->fast, act.q.data(), n, acc);
      } else {
        counters = reference ? fabric::reference::tgemm_ternary(*frame->lane_major, act.q.data(), n, acc)
                             : tfmbs::fast_engine().tgemm_ternary(*frame->fast, act.q.data(), n, acc);
      }
      epilogue(acc, act.token.data(), sc, per_row, bs, n, m, y.data_ptr<float>());
    }
  } catch (const fabric::FabricError& e) {
    TORCH_CHECK(false, "tfmbs.ternary_linear: the fabric rejected the op: ", e.what());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, "tfmbs.ternary_linear: ", e.what());
  }
  if (!direct && out.numel() > 0) host(out).view({n, m}).copy_(y);
  device_telemetry(dev).record(counters);
  if (op_log_enabled()) {
    OpRecord record;
    record.op = "tfmbs::ternary_linear";
    record.shapes = shapes_of(input, a);
    record.engine = reference ? "fabric-reference" : "fabric-fast";
    record.device = dev;
    record.counters = counters;
    record.bytes = static_cast<uint64_t>(input.nbytes() + out.nbytes() + packed.nbytes());
    record.wall_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
    op_log_append(std::move(record));
  }
  return out;
}

at::Tensor ternary_linear_meta(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                               const std::optional<at::Tensor>& bias, int64_t out_features,
                               int64_t in_features, c10::string_view packing, c10::string_view act_mode) {
  auto symbolic = [](const at::Tensor& t) {
    return t.defined() && t.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
  };
  if (!symbolic(input) && !symbolic(packed) && !symbolic(scale) && !(bias && symbolic(*bias))) {
    // Everything the real kernels check, so that tracing fails where eager does.
    check_linear(input, packed, scale, bias, out_features, in_features, std::string(packing),
                 std::string(act_mode));
    return at::empty(output_shape(input, out_features), input.options());
  }
  parse_packing(std::string(packing));
  parse_act_mode(std::string(act_mode));
  TORCH_CHECK_VALUE(input.dim() >= 1, "tfmbs.ternary_linear: input must have at least 1 dimension");
  TORCH_SYM_CHECK(input.sym_size(-1).sym_eq(in_features),
                  "tfmbs.ternary_linear: input's last dimension must equal in_features");
  const auto dt = input.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
                    "tfmbs.ternary_linear: input must be float32, bfloat16 or float16, got ", dt);
  TORCH_CHECK_VALUE(packed.scalar_type() == at::kByte, "tfmbs.ternary_linear: packed_weight must be uint8");
  c10::SymDimVector shape(input.sym_sizes().begin(), input.sym_sizes().end() - 1);
  shape.push_back(c10::SymInt(out_features));
  return at::empty_symint(shape, input.options());
}

// Builds (or finds) the resident frame ahead of the first call.
void prepare_frame_tfmbs(const at::Tensor& packed, int64_t out_features, int64_t in_features,
                         c10::string_view packing) {
  LinearArgs a;
  a.packing = parse_packing(std::string(packing));
  a.m = out_features;
  a.k = in_features;
  check_packed_weight(packed, out_features, in_features, a.packing, "tfmbs.prepare_frame");
  resident_frame(packed, a, g_engine.load() == Engine::Reference);
}

void prepare_frame_noop(const at::Tensor&, int64_t, int64_t, c10::string_view) {}

// ----------------------------------------------------- control / stats

std::string set_linear_engine(c10::string_view name) {
  Engine e;
  if (name == "fast") e = Engine::Fast;
  else if (name == "reference") e = Engine::Reference;
  else TORCH_CHECK_VALUE(false, "tfmbs: engine '", std::string(name), "' is not one of 'fast', 'reference'");
  Engine old = g_engine.exchange(e);
  return old == Engine::Fast ? "fast" : "reference";
}

std::vector<int64_t> frame_cache_info() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  sweep_dead_locked();
  int64_t bytes = 0;
  for (const auto& [key, e] : *g_cache) {
    bytes += static_cast<int64_t>(e->fast->bytes());
    if (e->lane_major) bytes += static_cast<int64_t>(e->lane_major->size());
  }
  return {static_cast<int64_t>(g_cache->size()), bytes};
}

void frame_cache_clear() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  g_cache->clear();
}

}  // namespace

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

TORCH_LIBRARY_IMPL(tfmbs, CPU, m) {
  m.impl("pack_pt5", &pack_pt5);
  m.impl("unpack_pt5", &unpack_pt5);
  m.impl("pack_t2b", &pack_t2b);
  m.impl("unpack_t2b", &unpack_t2b);
  m.impl("ternary_linear", &ternary_linear_cpu);
  m.impl("prepare_frame", &prepare_frame_noop);
}

TORCH_LIBRARY_IMPL(tfmbs, PrivateUse1, m) {
  m.impl("pack_pt5", &pack_pt5);
  m.impl("unpack_pt5", &unpack_pt5);
  m.impl("pack_t2b", &pack_t2b);
  m.impl("unpack_t2b", &unpack_t2b);
  m.impl("ternary_linear", &ternary_linear_tfmbs);
  m.impl("prepare_frame", &prepare_frame_tfmbs);
}

TORCH_LIBRARY_IMPL(tfmbs, Meta, m) {
  m.impl("pack_pt5", &pack_pt5_meta);
  m.impl("pack_t2b", &pack_t2b_meta);
  m.impl("unpack_pt5", &unpack_meta);
  m.impl("unpack_t2b", &unpack_meta);
  m.impl("ternary_linear", &ternary_linear_meta);
  m.impl("prepare_frame", &prepare_frame_noop);
}

}  // namespace tfmbs
