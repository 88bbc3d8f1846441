#include "aten/CpuFallback.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "aten/CpuAlias.h"
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
  bool warned = false;
};

std::mutex g_stats_mutex;
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
    if (mode == FallbackMode::Warn && !count.warned) {
      count.warned = warn = true;
    }
    name = mode == FallbackMode::Allow ? std::string() : count.name;
  }
  TORCH_CHECK_NOT_IMPLEMENTED(mode != FallbackMode::Error, "tfmbs: ", name,
                              " has no tfmbs kernel and TFMBS_FALLBACK=error forbids the CPU "
                              "fallback (set TFMBS_FALLBACK=warn or allow to run it on the host)");
  if (warn) {
    TORCH_WARN("tfmbs: ", name,
               " has no tfmbs kernel; it runs on the host CPU over device memory (zero-copy). "
               "This warning is shown once per op; TFMBS_FALLBACK=allow silences it.");
  }
}

// The CPU generator a CPU kernel needs in place of a tfmbs one: same state,
// copied back after the call so the tfmbs generator advances as CPU's would.
struct GeneratorSwap {
  at::Generator device_generator;
  at::Generator cpu_generator;
};

struct Prepared {
  c10::DeviceIndex device = -1;
  CpuAliases cpu_aliases;  // the device tensors among the arguments and their CPU views
  std::vector<GeneratorSwap> generators;
  bool cpu_tensor = false;  // a non-scalar CPU tensor among the arguments
};

// Tensors of one op must share a device, as on CUDA: a CPU tensor is
// accepted only as a 0-dim scalar or as an index (`allow_cpu`).
void check_same_device(const at::Tensor& t, Prepared& prepared, bool allow_cpu) {
  if (!t.defined()) return;
  c10::Device device = t.device();
  if (device.type() == kTfmbs) {
    if (prepared.device < 0) prepared.device = device.index();
    TORCH_CHECK(prepared.device == device.index(),
                "Expected all tensors to be on the same device, but found at least two devices, "
                "tfmbs:", static_cast<int>(prepared.device), " and ", device, "!");
  } else if (device.type() == c10::kCPU && t.dim() > 0 && !allow_cpu) {
    prepared.cpu_tensor = true;
  }
}

at::Tensor alias_if_device(const at::Tensor& t, Prepared& prepared, bool allow_cpu = false) {
  check_same_device(t, prepared, allow_cpu);
  if (!t.defined() || t.device().type() != kTfmbs) return t;
  return prepared.cpu_aliases(t);
}

GeneratorSwap swap_for_cpu(at::Generator device_generator) {
  at::Generator cpu_generator = at::make_generator<at::CPUGeneratorImpl>();
  std::lock_guard<std::mutex> lock(device_generator.mutex());
  cpu_generator.set_state(device_generator.get_state());
  return {std::move(device_generator), std::move(cpu_generator)};
}

bool is_generator_argument(const c10::Argument& argument) {
  const auto& type = argument.type();
  const auto optional = type->cast<c10::OptionalType>();
  return (optional ? optional->getElementType() : type)->kind() == c10::TypeKind::GeneratorType;
}

// Replaces the tfmbs tensors, devices and generators among the arguments
// with CPU equivalents that share their memory / state. A random op given
// no generator draws from its tfmbs device's default generator, as a CUDA
// op draws from its device's, never from CPU's.
void prepare_arguments(const c10::FunctionSchema& schema, torch::jit::Stack& stack, size_t first,
                       Prepared& prepared) {
  std::vector<size_t> default_generators;
  for (size_t i = first; i < stack.size(); ++i) {
    c10::IValue& value = stack[i];
    if (value.isTensor()) {
      value = alias_if_device(value.toTensor(), prepared);
    } else if (value.isTensorList()) {
      auto list = value.toTensorList();
      for (size_t j = 0; j < list.size(); ++j) list.set(j, alias_if_device(list.get(j), prepared));
    } else if (value.isOptionalTensorList()) {
      auto list = value.toOptionalTensorList();
      for (size_t j = 0; j < list.size(); ++j) {
        std::optional<at::Tensor> t = list.get(j);
        if (t) list.set(j, alias_if_device(*t, prepared, /*allow_cpu=*/true));
      }
    } else if (value.isDevice() && value.toDevice().type() == kTfmbs) {
      if (prepared.device < 0) prepared.device = value.toDevice().index();
      value = c10::IValue(c10::Device(c10::kCPU));
    } else if (value.isGenerator() && value.toGenerator().defined() &&
               value.toGenerator().device().type() == kTfmbs) {
      prepared.generators.push_back(swap_for_cpu(value.toGenerator()));
      value = c10::IValue(prepared.generators.back().cpu_generator);
    } else if (value.isNone() && is_generator_argument(schema.arguments()[i - first])) {
      default_generators.push_back(i);
    }
  }
  if (default_generators.empty()) return;
  c10::DeviceIndex device = prepared.device < 0 ? current_device() : prepared.device;
  prepared.generators.push_back(swap_for_cpu(
      at::globalContext().defaultGenerator(c10::Device(kTfmbs, device))));
  for (size_t i : default_generators) stack[i] = c10::IValue(prepared.generators.back().cpu_generator);
}

// Brings a CPU result back to the device: a view of a device input stays a
// view of it, a block the kernel allocated in the pool is adopted, anything
// else (rare: e.g. a cached CPU constant) is copied into the pool.
at::Tensor to_device(const at::Tensor& result, const Prepared& prepared) {
  if (!result.defined() || result.device().type() != c10::kCPU) return result;
  for (const auto& [original, alias] : prepared.cpu_aliases.pairs()) {
    if (result.is_same(alias)) return original;
    if (result.storage().is_alias_of(alias.storage())) {
      return device_view(original.storage(), result, result.dtype());
    }
  }
  return adopt_or_copy(result, prepared.device);
}

std::string describe_shapes(const Prepared& prepared) {
  std::string text;
  for (const auto& [original, alias] : prepared.cpu_aliases.pairs()) {
    if (!text.empty()) text += ", ";
    text += c10::str(original.sizes());
  }
  return text;
}

void tfmbs_cpu_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  count_call(op);
  const size_t num_arguments = op.schema().arguments().size();
  const size_t first = stack->size() - num_arguments;
  Prepared prepared;
  prepare_arguments(op.schema(), *stack, first, prepared);
  TORCH_CHECK(!prepared.cpu_tensor || prepared.device < 0,
              "Expected all tensors to be on the same device, but found at least two devices, "
              "tfmbs:", static_cast<int>(prepared.device), " and cpu! (", op_name(op), ")");
  c10::DeviceIndex device = prepared.device < 0 ? current_device() : prepared.device;
  prepared.device = device;
  device_telemetry(device).add_fallback_op();
  {
    OpLogScope log;  // the row covers the kernel call
    std::string shapes = log.enabled() ? describe_shapes(prepared) : std::string();
    {
      c10::DeviceGuard guard(c10::Device(kTfmbs, device));
      PoolCapture capture(device);
      op.callBoxed(stack);
    }
    if (log.enabled()) {
      log.record.op = op_name(op);
      log.record.shapes = std::move(shapes);
      log.record.engine = "host";
      log.record.device = device;
      for (const auto& [original, alias] : prepared.cpu_aliases.pairs()) {
        log.record.bytes += static_cast<uint64_t>(original.numel() * original.element_size());
      }
    }
  }
  for (auto& swap : prepared.generators) {
    std::lock_guard<std::mutex> lock(swap.device_generator.mutex());
    swap.device_generator.set_state(swap.cpu_generator.get_state());
  }
  // Mutated arguments (in-place and out=) must show the kernel's changes.
  for (const auto& [original, alias] : prepared.cpu_aliases.pairs()) {
    if (original.storage().data() != alias.storage().data() ||
        original.sizes() != alias.sizes() || original.strides() != alias.strides() ||
        original.storage_offset() != alias.storage_offset()) {
      sync_back(original, alias);
    }
  }
  const size_t num_returns = op.schema().returns().size();
  for (size_t i = stack->size() - num_returns; i < stack->size(); ++i) {
    c10::IValue& value = (*stack)[i];
    if (value.isTensor()) {
      value = to_device(value.toTensor(), prepared);
    } else if (value.isTensorList()) {
      auto list = value.toTensorList();
      for (size_t j = 0; j < list.size(); ++j) list.set(j, to_device(list.get(j), prepared));
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
  // CompositeImplicitAutograd ops are left alone: a backend kernel would
  // hide their autograd formula.
  auto& dispatcher = c10::Dispatcher::singleton();
  static auto* library = new torch::Library(torch::Library::IMPL, "aten",
                                            c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
  for (const c10::OperatorName& name : dispatcher.getAllOpNames()) {
    if (name.name.rfind("aten::", 0) != 0) continue;
    auto op = dispatcher.findOp(name);
    if (!op || !op->hasSchema()) continue;
    bool composite =
        op->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd) ||
        op->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutogradNonFunctional);
    if (op->hasKernelForDispatchKey(c10::DispatchKey::CPU) && composite &&
        !op->hasKernelForDispatchKey(c10::DispatchKey::PrivateUse1) &&
        !op->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd)) {
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
