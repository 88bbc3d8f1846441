#include "aten/CpuFallback.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <atomic>
#include <mutex>
#include <unordered_map>

#include "aten/HostCall.h"
#include "aten/native/Common.h"
#include "device/OpLog.h"
#include "device/PoolCapture.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

std::atomic<FallbackMode> g_mode{FallbackMode::Warn};
// Set while the configured mode is invalid: each fallback call raises it.
std::atomic<std::string*> g_mode_error{nullptr};

struct OpCount {
  std::string name;
  int64_t calls = 0;
};

std::mutex g_stats_mutex;
bool g_warned = false;  // the warn mode's one line per process was shown
// Keyed by the op's schema, whose address is stable for the process.
auto* g_stats = new std::unordered_map<const c10::FunctionSchema*, OpCount>;

std::string op_name(const c10::OperatorHandle& op) {
  const auto& name = op.operator_name();
  return name.overload_name.empty() ? name.name : name.name + "." + name.overload_name;
}

void count_call(const c10::OperatorHandle& op) {
  if (const std::string* error = g_mode_error.load()) TORCH_CHECK_VALUE(false, *error);
  FallbackMode mode = g_mode.load(std::memory_order_relaxed);
  bool warn = false;
  std::string name;
  {
    std::lock_guard<std::mutex> lock(g_stats_mutex);
    OpCount& count = (*g_stats)[&op.schema()];
    if (count.name.empty()) count.name = op_name(op);
    ++count.calls;
    if (mode == FallbackMode::Warn && !g_warned) g_warned = warn = true;
    name = mode == FallbackMode::Allow ? std::string() : count.name;
  }
  TORCH_CHECK_NOT_IMPLEMENTED(mode != FallbackMode::Error, "tfmbs: ", name,
                              " has no tfmbs kernel and TFMBS_FALLBACK=error forbids the CPU "
                              "fallback (set TFMBS_FALLBACK=warn or allow to run it on the host)");
  if (warn) {
    TORCH_WARN("tfmbs: ", name,
               " has no tfmbs kernel and ran on the host CPU through the fallback (zero-copy); "
               "this is reported once per process: torch_tfmbs.fallback_stats() lists every op "
               "that fell back, TFMBS_FALLBACK=allow silences this, TFMBS_FALLBACK=error forbids "
               "the fallback.");
  }
}

bool is_generator_argument(const c10::Argument& argument) {
  const auto& type = argument.type();
  const auto optional = type->cast<c10::OptionalType>();
  return (optional ? optional->getElementType() : type)->kind() == c10::TypeKind::GeneratorType;
}

// Replaces the tfmbs tensors, devices and generators among the arguments
// with their CPU equivalents (HostCall).
void prepare_arguments(const c10::FunctionSchema& schema, torch::jit::Stack& stack, size_t first,
                       HostCall& call) {
  for (size_t i = first; i < stack.size(); ++i) {
    c10::IValue& value = stack[i];
    if (value.isTensor()) {
      value = call.tensor(value.toTensor());
    } else if (value.isTensorList()) {
      auto list = value.toTensorList();
      for (size_t j = 0; j < list.size(); ++j) list.set(j, call.tensor(list.get(j)));
    } else if (value.isOptionalTensorList()) {
      auto list = value.toOptionalTensorList();
      for (size_t j = 0; j < list.size(); ++j) {
        std::optional<at::Tensor> t = list.get(j);
        if (t) list.set(j, call.tensor(*t, /*allow_cpu=*/true));
      }
    } else if (value.isDevice()) {
      value = c10::IValue(call.device_argument(value.toDevice()));
    } else if ((value.isGenerator() && value.toGenerator().defined()) ||
               (value.isNone() && is_generator_argument(schema.arguments()[i - first]))) {
      std::optional<at::Generator> generator;
      if (value.isGenerator()) generator = value.toGenerator();
      generator = call.generator(generator);
      value = generator ? c10::IValue(*generator) : c10::IValue();
    }
  }
}

void tfmbs_cpu_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  count_call(op);
  const size_t num_arguments = op.schema().arguments().size();
  const size_t first = stack->size() - num_arguments;
  HostCall call;
  prepare_arguments(op.schema(), *stack, first, call);
  const c10::DeviceIndex device = call.begin(op_name(op).c_str());
  device_telemetry(device).add_fallback_op();
  {
    OpLogScope log;  // the row covers the kernel call
    {
      c10::DeviceGuard guard(c10::Device(kTfmbs, device));
      PoolCapture capture(device);
      op.callBoxed(stack);
    }
    // Before end(): the row shows the arguments as the caller passed them.
    if (log.enabled()) call.describe(log.record, op_name(op));
  }
  call.end();
  const size_t num_returns = op.schema().returns().size();
  for (size_t i = stack->size() - num_returns; i < stack->size(); ++i) {
    c10::IValue& value = (*stack)[i];
    if (value.isTensor()) {
      value = call.to_device(value.toTensor());
    } else if (value.isTensorList()) {
      auto list = value.toTensorList();
      for (size_t j = 0; j < list.size(); ++j) list.set(j, call.to_device(list.get(j)));
    }
  }
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&tfmbs_cpu_fallback>());
}

}  // namespace

void route_composite_ops_to_cpu_kernels() {
  // An op with a CPU kernel and a CompositeExplicitAutograd one would run
  // the composite (a decomposition, with other rounding) for tfmbs; a
  // structured op's NonFunctional composite would allocate the output and
  // dispatch again to its out= variant. Sending either to the fallback runs
  // the CPU kernel once, so results are CPU's to the bit, with one dispatch.
  // CompositeImplicitAutograd ops are left alone (a backend kernel would
  // hide their autograd formula) unless they have an autograd kernel of
  // their own and a CPU kernel, which CPU runs instead of the composite.
  auto& dispatcher = c10::Dispatcher::singleton();
  static auto* library = new torch::Library(torch::Library::IMPL, "aten",
                                            c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
  for (const c10::OperatorName& name : dispatcher.getAllOpNames()) {
    if (name.name.rfind("aten::", 0) != 0) continue;
    auto op = dispatcher.findOp(name);
    if (!op || !op->hasSchema()) continue;
    const bool implicit = op->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
    const bool composite =
        op->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd) ||
        op->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutogradNonFunctional) ||
        (implicit && op->hasKernelForDispatchKey(c10::DispatchKey::Autograd));
    if (op->hasKernelForDispatchKey(c10::DispatchKey::CPU) && composite &&
        !op->hasKernelForDispatchKey(c10::DispatchKey::PrivateUse1) &&
        (!implicit || op->hasKernelForDispatchKey(c10::DispatchKey::Autograd))) {
      std::string qualified = name.name.substr(6);
      if (!name.overload_name.empty()) qualified += "." + name.overload_name;
      library->impl(qualified.c_str(),
                    torch::CppFunction::makeFromBoxedFunction<&tfmbs_cpu_fallback>());
    }
  }
}

FallbackMode parse_fallback_mode(const std::string& text, const std::string& source) {
  if (text == "allow") return FallbackMode::Allow;
  if (text == "warn") return FallbackMode::Warn;
  if (text == "error") return FallbackMode::Error;
  TORCH_CHECK_VALUE(false, source, "='", text, "' is not a fallback mode: use allow, warn or error");
}

void set_fallback_mode(FallbackMode mode) {
  {
    std::lock_guard<std::mutex> lock(g_stats_mutex);
    g_warned = false;  // setting the mode re-arms the warn mode's one line
  }
  g_mode = mode;
  g_mode_error = nullptr;  // leaked: a reader may still hold it
}

void set_fallback_mode_from_env(const std::string& text, const std::string& source) {
  try {
    set_fallback_mode(parse_fallback_mode(text, source));
  } catch (const c10::ValueError& e) {
    g_mode_error = new std::string(e.what_without_backtrace());
    throw;
  }
}
FallbackMode fallback_mode() { return g_mode; }

std::map<std::string, int64_t> fallback_stats() {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  std::map<std::string, int64_t> out;
  for (const auto& [schema, count] : *g_stats) {
    if (count.calls > 0) out[count.name] = count.calls;
  }
  return out;
}

void reset_fallback_stats() {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  for (auto& [schema, count] : *g_stats) count.calls = 0;
}

}  // namespace tfmbs
