// The ops a device must implement itself: allocation, views (a CPU kernel
// cannot return aliases of device memory), copies between devices, and
// scalar reads. The dense ops are host kernels (HostOps.def); the rest run
// through the CPU fallback.
#include <ATen/EmptyTensor.h>
#include <ATen/ExpandUtils.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/_local_scalar_dense.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_cpu_dispatch.h>
#include <ATen/ops/resize_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "aten/CoreOps.h"
#include "aten/CpuAlias.h"
#include "aten/native/Common.h"
#include "aten/SharedStorages.h"
#include "device/PinnedHostAllocator.h"
#include "device/StreamWork.h"
#include "device/TfmbsAllocator.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

c10::Device checked_device(std::optional<c10::Device> device, std::optional<bool> pin_memory,
                           std::optional<c10::Layout> layout) {
  TORCH_CHECK(!pin_memory.value_or(false),
              "tfmbs: pin_memory=True is for CPU tensors; a tfmbs tensor cannot be pinned");
  TORCH_CHECK(layout.value_or(c10::kStrided) == c10::kStrided,
              "tfmbs: only strided tensors are supported, got layout ", *layout);
  c10::DeviceIndex index = device && device->has_index() ? device->index() : -1;
  return {kTfmbs, resolve_device(index)};
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout,
                               std::optional<c10::Device> device,
                               std::optional<bool> pin_memory,
                               std::optional<c10::MemoryFormat> memory_format) {
  c10::DeviceGuard guard(checked_device(device, pin_memory, layout));
  return at::detail::empty_generic(size, tfmbs_allocator(), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride,
                         std::optional<c10::ScalarType> dtype, std::optional<c10::Layout> layout,
                         std::optional<c10::Device> device, std::optional<bool> pin_memory) {
  c10::DeviceGuard guard(checked_device(device, pin_memory, layout));
  return at::detail::empty_strided_generic(size, stride, tfmbs_allocator(),
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

at::Tensor as_strided(const at::Tensor& self, c10::SymIntArrayRef size,
                      c10::SymIntArrayRef stride, std::optional<c10::SymInt> storage_offset) {
  return at::cpu::as_strided_symint(self, size, stride, std::move(storage_offset));
}

const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size,
                          std::optional<c10::MemoryFormat> memory_format) {
  c10::DeviceGuard guard(self.device());
  return at::native::resize_(self, C10_AS_INTARRAYREF_SLOW(size), memory_format);
}

at::Tensor& set_source_storage(at::Tensor& self, c10::Storage source, c10::SymInt offset,
                               c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  TORCH_CHECK(source.device().type() == kTfmbs,
              "tfmbs: set_ expects a tfmbs storage, got a ", source.device(), " storage");
  mark_shared_by_set(source);
  return at::native::set_storage_cpu_(self, std::move(source), offset.expect_int(),
                                      C10_AS_INTARRAYREF_SLOW(size),
                                      C10_AS_INTARRAYREF_SLOW(stride));
}

at::Tensor& set_storage(at::Tensor& self, c10::Storage source) {
  int64_t elements = static_cast<int64_t>(source.nbytes() / self.dtype().itemsize());
  return set_source_storage(self, std::move(source), 0, {elements}, {});
}

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) {
  mark_shared_by_set(source.storage());
  return at::native::set_tensor_(self, source);
}

at::Tensor& set_empty(at::Tensor& self) {
  c10::Storage empty(c10::Storage::use_byte_size_t(), 0, tfmbs_allocator()->allocate(0),
                     tfmbs_allocator(), /*resizable=*/true);
  // A fresh storage nobody else holds: nothing is shared, so not marked.
  return at::native::set_storage_cpu_(self, std::move(empty), 0, {0}, {});
}

// Tensor.copy_ sends every copy that touches a tfmbs tensor here (src is
// `self`). Both sides are host memory, so PyTorch's CPU copy does the work:
// broadcasting, dtype conversion and strides included.
void copy_now(const at::Tensor& self, const at::Tensor& dst) {
  for (const at::Tensor* host_side : {&self, &dst})
    if (host_side->device().type() != kTfmbs) check_storage_holds(*host_side);
  CpuAliases aliases;  // one CPU storage per device storage: overlaps raise as on CPU
  auto alias = [&](const at::Tensor& t) { return t.device().type() == kTfmbs ? aliases(t) : t; };
  at::Tensor cpu_dst = alias(dst);
  cpu_dst.copy_(alias(self));
  auto bytes = static_cast<uint64_t>(dst.numel() * dst.element_size());
  bool from_device = self.device().type() == kTfmbs;
  bool to_device = dst.device().type() == kTfmbs;
  if (to_device && !from_device) device_telemetry(dst.device().index()).add_bytes_h2d(bytes);
  if (from_device && !to_device) device_telemetry(self.device().index()).add_bytes_d2h(bytes);
}

// What CPU's copy checks before it touches memory: a bad copy that is
// queued raises when it is called, as on CPU.
void check_copy(const at::Tensor& self, const at::Tensor& dst) {
  const auto shape = at::infer_size_dimvector(dst.sizes(), self.sizes());
  TORCH_CHECK(c10::IntArrayRef(shape) == dst.sizes(), "output with shape ", dst.sizes(),
              " doesn't match the broadcast shape ", c10::IntArrayRef(shape));
  at::assert_no_internal_overlap(dst);
}

// As on CUDA, a non_blocking copy between pinned host memory and the device
// is queued on the device's current stream; every other copy is done on
// return.
at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  const bool to_device = dst.device().type() == kTfmbs;
  const at::Tensor& device_side = to_device ? dst : self;
  const at::Tensor& host_side = to_device ? self : dst;
  if (non_blocking && host_side.device().is_cpu() &&
      is_pinned_host_pointer(host_side.storage().data()) &&
      queues_work(device_side.device().index(), /*default_stream_too=*/true)) {
    check_copy(self, dst);
    queue_work(device_side.device().index(),
               [self = same_memory(self), dst = same_memory(dst)] { copy_now(self, dst); });
    return dst;
  }
  copy_now(self, dst);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  if (dst.sizes() != self.sizes()) {
    c10::DeviceGuard guard(dst.device());
    at::native::resize_(dst, self.sizes());
  }
  return copy_from(self, dst, false);
}

c10::Scalar local_scalar_dense(const at::Tensor& self) {
  return at::_local_scalar_dense(cpu_alias(self));
}

// Lets `param.data = tfmbs_tensor` and Module.to("tfmbs") keep Parameter
// objects (so an optimizer made before the move still owns them), as for
// CPU <-> CUDA.
bool has_compatible_shallow_copy_type(const at::Tensor& self, const at::Tensor& from) {
  auto dense = [](const at::Tensor& t) {
    auto type = t.device().type();
    return t.layout() == c10::kStrided && (type == kTfmbs || type == c10::kCPU);
  };
  if (dense(self) && dense(from)) return true;
  return self.unsafeGetTensorImpl()->has_compatible_shallow_copy_type(from.key_set());
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("as_strided", as_strided);
  m.impl("view", at::native::view);
  m.impl("_reshape_alias", at::native::_reshape_alias);
  m.impl("resize_", resize_);
  m.impl("set_.source_Storage", set_storage);
  m.impl("set_.source_Storage_storage_offset", set_source_storage);
  m.impl("set_.source_Tensor", set_tensor);
  m.impl("set_", set_empty);
  m.impl("_copy_from", copy_from);
  m.impl("_copy_from_and_resize", copy_from_and_resize);
  m.impl("_local_scalar_dense", local_scalar_dense);
}

// Copies read conjugate/negative views directly (cpu_alias keeps the bits):
// the Conjugate and Negative fallbacks would materialise the source with a
// clone, which copies through _copy_from again, without end.
TORCH_LIBRARY_IMPL(aten, Conjugate, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}
TORCH_LIBRARY_IMPL(aten, Negative, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

}  // namespace

void register_shallow_copy_override() {
  // _has_compatible_shallow_copy_type is CompositeImplicitAutograd with no
  // device key of its own, so the override replaces that kernel; c10 warns
  // about any such override, which would only confuse users here.
  struct Silent : c10::WarningHandler {
    void process(const c10::Warning&) override {}
  } silent;
  c10::WarningUtils::WarningHandlerGuard guard(&silent);
  static auto* library = new torch::Library(torch::Library::IMPL, "aten",
                                            c10::DispatchKey::CompositeImplicitAutograd,
                                            __FILE__, __LINE__);
  library->impl("_has_compatible_shallow_copy_type", has_compatible_shallow_copy_type);
}

}  // namespace tfmbs
