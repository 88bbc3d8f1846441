#include "aten/native/TernaryLinear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <sstream>

#include "aten/native/Common.h"
#include "aten/native/Packing.h"
#include "aten/native/TernaryArgs.h"
#include "aten/native/TernaryFrames.h"
#include "device/TfmbsDevices.h"
#include "fabric/activation_quant.h"
#include "fabric/fast_engine.h"
#include "fabric/lane_kernels.h"
#include "fabric/tgemm.h"

namespace tfmbs {
namespace {

enum class Engine { Fast, Reference };
std::atomic<Engine> g_engine{Engine::Fast};

// The activations of one call in the form the lanes take, with the
// per-token factor the epilogue multiplies by.
struct Activations {
  std::vector<int8_t> q;     // int8 / ternary modes, [n, k]
  std::vector<float> token;  // per-token factor, [n]
};

// Rows run in parallel only when there is enough work to pay for waking
// the OpenMP workers (these are 2-core machines).
constexpr int64_t kParallelElements = int64_t{1} << 14;

template <typename Fn>
void for_rows(int64_t rows, int64_t row_elements, Fn fn) {
  if (rows * row_elements < kParallelElements) {
    fn(0, rows);
    return;
  }
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelElements / 4 / std::max<int64_t>(row_elements, 1)), fn);
}

void quantize(ActMode mode, const float* x, int64_t n, int64_t k, Activations& out) {
  out.q.resize(static_cast<size_t>(n * k));
  out.token.resize(static_cast<size_t>(n));
  for_rows(n, k, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (mode == ActMode::Int8) fabric::quantize_row_int8(x + b * k, k, out.q.data() + b * k, &out.token[b]);
      else fabric::quantize_row_ternary(x + b * k, k, out.q.data() + b * k, &out.token[b]);
    }
  });
}

// y[b, r] from the lanes' accumulators: separate roundings (mul, mul, add),
// identical in the CPU and tfmbs kernels.
template <typename Acc>
void epilogue_row(const Acc* __restrict a, float t, const float* __restrict scale, bool per_row,
                  const float* __restrict bias, int64_t m, float* __restrict y) {
  // One pass per case (the compiler vectorizes each loop).
  const float s = scale[0];
  if (per_row && bias) {
    for (int64_t r = 0; r < m; ++r) y[r] = (static_cast<float>(a[r]) * t) * scale[r] + bias[r];
  } else if (per_row) {
    for (int64_t r = 0; r < m; ++r) y[r] = (static_cast<float>(a[r]) * t) * scale[r];
  } else if (bias) {
    for (int64_t r = 0; r < m; ++r) y[r] = (static_cast<float>(a[r]) * t) * s + bias[r];
  } else {
    for (int64_t r = 0; r < m; ++r) y[r] = (static_cast<float>(a[r]) * t) * s;
  }
}

// The epilogue of output rows [r0, r1) for every batch row.
template <typename Acc>
void epilogue_rows(const Acc* acc, const float* token, const float* scale, bool per_row_scale,
                   const float* bias, int64_t n, int64_t m, float* y, int64_t r0, int64_t r1) {
  const float* row_scale = per_row_scale ? scale + r0 : scale;
  const float* row_bias = bias ? bias + r0 : nullptr;
  for (int64_t b = 0; b < n; ++b) {
    // fp activations: no per-token factor (multiplying by 1 is exact)
    epilogue_row(acc + b * m + r0, token ? token[b] : 1.0f, row_scale, per_row_scale, row_bias, r1 - r0,
                 y + b * m + r0);
  }
}

template <typename Acc>
void epilogue(const Acc* acc, const float* token, const float* scale, bool per_row_scale,
              const float* bias, int64_t n, int64_t m, float* y) {
  for_rows(n, m, [&](int64_t b0, int64_t b1) {
    epilogue_rows(acc + b0 * m, token ? token + b0 : nullptr, scale, per_row_scale, bias, b1 - b0, m,
                  y + b0 * m, 0, m);
  });
}

// A float32 operand's host address: the tensor's own memory when it is
// float32 and contiguous (the pool is host memory), else a converted copy
// kept in `copy`.
const float* float_operand(const at::Tensor& t, at::Tensor& copy) {
  if (t.scalar_type() == at::kFloat && t.is_contiguous()) {
    if (t.device().type() == kTfmbs) check_allocated(t);
    return t.const_data_ptr<float>();
  }
  copy = host(t).to(at::kFloat).contiguous();
  return copy.const_data_ptr<float>();
}

struct HostOperands {
  const float* x = nullptr;      // [n, k]
  const float* scale = nullptr;  // one value, or one per output row
  bool per_row_scale = false;
  const float* bias = nullptr;   // one per output row, or null
  at::Tensor copies[3];          // operands that had to be converted
};

HostOperands host_operands(const at::Tensor& input, const at::Tensor& scale,
                           const std::optional<at::Tensor>& bias) {
  HostOperands h;
  h.x = float_operand(input, h.copies[0]);
  h.scale = float_operand(scale, h.copies[1]);
  h.per_row_scale = scale.numel() > 1;
  if (bias && bias->defined()) h.bias = float_operand(*bias, h.copies[2]);
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

// The fabric's work for one call: `out` (allocated by the caller) gets the
// result. Runs on the calling thread, or on a stream's worker.
void run_ternary_linear(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                        const std::optional<at::Tensor>& bias, const LinearArgs& a, bool reference,
                        const at::Tensor& out) {
  OpLogScope log;
  const c10::DeviceIndex dev = input.device().index();
  const ResidentFrame frame = resident_frame(packed, a, reference);
  const int64_t n = a.n, m = a.m, k = a.k;
  const HostOperands h = host_operands(input, scale, bias);
  const bool direct = input.scalar_type() == at::kFloat;
  // float32 output: the epilogue writes straight into device memory (host
  // memory: out's own address).
  const at::Tensor y = direct ? at::Tensor() : at::empty({n, m}, at::kFloat);
  float* const y_rows = direct ? out.mutable_data_ptr<float>() : y.data_ptr<float>();
  fabric::OpCounters counters;
  const fabric::FastEngine* fast = reference ? nullptr : &tfmbs::fast_engine();
  try {
    if (a.mode == ActMode::Fp32) {
      std::vector<float> big;
      float* acc = scratch_buffer(big, static_cast<size_t>(n * m));
      const fabric::RowsDone done = [&](int64_t r0, int64_t r1) {
        epilogue_rows(acc, nullptr, h.scale, h.per_row_scale, h.bias, n, m, y_rows, r0, r1);
      };
      counters = log.time_engine([&] {
        return fabric::run_tgemm(fast, frame.fast.get(), frame.lane_major.get(), fabric::ActivationKind::Fp32,
                                 h.x, n, acc, &done);
      });
    } else {
      thread_local Activations act;
      quantize(a.mode, h.x, n, k, act);
      std::vector<int32_t> big;
      int32_t* acc = scratch_buffer(big, static_cast<size_t>(n * m));
      const auto kind = a.mode == ActMode::Int8 ? fabric::ActivationKind::Int8 : fabric::ActivationKind::Ternary;
      // The engine's threads run this: `act` is this thread's (thread_local).
      const float* token = act.token.data();
      const fabric::RowsDone done = [&](int64_t r0, int64_t r1) {
        epilogue_rows(acc, token, h.scale, h.per_row_scale, h.bias, n, m, y_rows, r0, r1);
      };
      counters = log.time_engine([&] {
        return fabric::run_tgemm(fast, frame.fast.get(), frame.lane_major.get(), kind, act.q.data(), n, acc, &done);
      });
    }
  } catch (const fabric::FabricError& e) {
    TORCH_CHECK(false, "tfmbs.ternary_linear: the fabric rejected the op: ", e.what());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, "tfmbs.ternary_linear: ", e.what());
  }
  if (!direct && out.numel() > 0) host(out).view({n, m}).copy_(y);
  device_telemetry(dev).record(counters);
  if (log.enabled()) {
    log.record.op = "tfmbs::ternary_linear";
    log.record.shapes = shapes_of(input, a);
    log.record.engine = reference ? "fabric-reference" : "fabric-fast";
    log.record.device = dev;
    log.record.counters = counters;
    log.record.bytes = static_cast<uint64_t>(input.nbytes() + out.nbytes() + packed.nbytes());
  }
}

}  // namespace

// The reference: decode the weights and run the lanes' arithmetic row by
// row on the host (fabric/lane_kernels.h, independent of the engines' frame
// layouts), with the same quantization and epilogue.
at::Tensor ternary_linear_cpu(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                              const std::optional<at::Tensor>& bias, int64_t out_features,
                              int64_t in_features, c10::string_view packing, c10::string_view act_mode) {
  const LinearArgs a = check_linear(input, packed, scale, bias, out_features, in_features,
                                    std::string(packing), std::string(act_mode));
  const int64_t n = a.n, m = a.m, k = a.k;
  const at::Tensor flat = packed.reshape(-1);
  at::Tensor w = a.packing == Packing::Pt5 ? unpack_pt5(flat, m * k) : unpack_t2b(flat, m * k);  // int8 [m*k]
  const int8_t* wt = w.data_ptr<int8_t>();
  const HostOperands h = host_operands(input, scale, bias);
  at::Tensor y = at::empty({n, m}, at::kFloat);
  if (a.mode == ActMode::Fp32) {
    std::vector<float> acc(static_cast<size_t>(n * m));
    const float* x = h.x;
    at::parallel_for(0, m, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < n; ++b) {
          acc[static_cast<size_t>(b * m + r)] = fabric::lane_dot_fp32(wt + r * k, x + b * k, k);
        }
      }
    });
    epilogue(acc.data(), nullptr, h.scale, h.per_row_scale, h.bias, n, m, y.data_ptr<float>());
  } else {
    Activations act;
    quantize(a.mode, h.x, n, k, act);
    std::vector<int32_t> acc(static_cast<size_t>(n * m));
    at::parallel_for(0, m, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t b = 0; b < n; ++b) {
          acc[static_cast<size_t>(b * m + r)] = fabric::lane_dot_int8(wt + r * k, act.q.data() + b * k, k);
        }
      }
    });
    epilogue(acc.data(), act.token.data(), h.scale, h.per_row_scale, h.bias, n, m, y.data_ptr<float>());
  }
  return make_output(input, m, y);
}

at::Tensor ternary_linear_tfmbs(const at::Tensor& input, const at::Tensor& packed, const at::Tensor& scale,
                                const std::optional<at::Tensor>& bias, int64_t out_features,
                                int64_t in_features, c10::string_view packing, c10::string_view act_mode) {
  const LinearArgs a = check_linear(input, packed, scale, bias, out_features, in_features,
                                    std::string(packing), std::string(act_mode));
  TORCH_CHECK(input.device().type() == kTfmbs, "tfmbs.ternary_linear: the tfmbs kernel got input on ",
              input.device());
  const c10::DeviceIndex dev = input.device().index();
  const bool reference = g_engine.load() == Engine::Reference;
  at::Tensor out = at::empty(output_shape(input, a.m), input.options());
  if (!queues_work(dev, /*default_stream_too=*/false)) {
    run_ternary_linear(input, packed, scale, bias, a, reference, out);
    return out;
  }
  // On a side stream: its worker runs the call, on tensors of its own.
  std::optional<at::Tensor> own_bias;
  if (bias && bias->defined()) own_bias = same_memory(*bias);
  queue_work(dev, [input = same_memory(input), packed = same_memory(packed), scale = same_memory(scale),
                   bias = std::move(own_bias), a, reference, out = same_memory(out)] {
    run_ternary_linear(input, packed, scale, bias, a, reference, out);
  });
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

std::string set_linear_engine(c10::string_view name) {
  Engine e;
  if (name == "fast") e = Engine::Fast;
  else if (name == "reference") e = Engine::Reference;
  else TORCH_CHECK_VALUE(false, "tfmbs: engine '", std::string(name), "' is not one of 'fast', 'reference'");
  Engine old = g_engine.exchange(e);
  return old == Engine::Fast ? "fast" : "reference";
}

}  // namespace tfmbs
