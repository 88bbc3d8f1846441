// Zero-copy CPU views of tfmbs tensors and back. The emulated fabric pool is
// host memory, so PyTorch's CPU kernels can run on it directly.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/SmallVector.h>

#include <utility>

namespace tfmbs {

// Throws CPU's "data is not allocated yet" error when `tensor`'s elements
// are not all inside its storage (a storage freed with resize_(0), or
// shrunk, as FSDP-style offloading does). Every kernel that reads or writes
// a device tensor's memory goes through this (cpu_alias checks it), which
// first waits for the work queued on the tensor's device's current stream
// (device/StreamWork.h).
void check_allocated(const at::Tensor& tensor);
// The storage part of that check alone, for CPU tensors too (CPU's own
// kernels read a freed storage's null pointer).
void check_storage_holds(const at::Tensor& tensor);

// CPU views of the device tensors of one op call. Views of one device
// storage share one CPU storage, and one device tensor passed twice gets one
// CPU tensor, so PyTorch's overlap and same-tensor checks (which compare
// storages and tensors) see exactly what they would see on CPU. A view's storage covers
// the whole device storage and does not own it; resizing it allocates new
// memory rather than touching the device storage: sync_back() carries such
// a change back.
class CpuAliases {
 public:
  at::Tensor operator()(const at::Tensor& device_tensor);
  // Each device tensor seen, with its CPU view, once.
  const c10::SmallVectorImpl<std::pair<at::Tensor, at::Tensor>>& pairs() const { return tensors_; }

 private:
  c10::SmallVector<std::pair<const c10::StorageImpl*, c10::Storage>, 4> storages_;
  c10::SmallVector<std::pair<at::Tensor, at::Tensor>, 4> tensors_;  // (device tensor, CPU view)
};

// A CPU view of one device tensor (for a kernel with one device operand, or
// whose operands are only read).
at::Tensor cpu_alias(const at::Tensor& device_tensor);

// A tfmbs tensor over `storage` (a device storage) with the given geometry.
at::Tensor device_view(const c10::Storage& storage, const at::Tensor& geometry,
                       caffe2::TypeMeta dtype);

// A new tensor (tfmbs or CPU, as `tensor`) over `tensor`'s memory, with its
// geometry and conj/neg bits, for work queued on a stream: a later set_ on
// `tensor` cannot move what the work reads or writes, and, unlike a view,
// it holds no reference to `tensor`, whose release could need Python's GIL.
at::Tensor same_memory(const at::Tensor& tensor);

// Makes `cpu_result`, a CPU tensor whose storage is a tfmbs pool block
// nobody else holds, a tfmbs tensor owning that block. Returns an undefined
// tensor when the storage cannot be adopted.
at::Tensor adopt_pool_tensor(const at::Tensor& cpu_result, c10::DeviceIndex device);

// cpu_alias of an optional tensor; CPU tensors pass through unchanged.
std::optional<at::Tensor> cpu_alias_optional(const std::optional<at::Tensor>& tensor);

// The device tensor for a result a CPU kernel produced under PoolCapture:
// adopted without a copy when it is a pool block nobody else holds, copied
// to the device otherwise.
at::Tensor adopt_or_copy(const at::Tensor& cpu_result, c10::DeviceIndex device);

// After a CPU kernel ran on `alias` (a CPU view of `original`), makes
// `original` show what the kernel did to it: a resize or re-point of the
// alias's storage, and changed sizes/strides/offset.
void sync_back(const at::Tensor& original, const at::Tensor& alias);

}  // namespace tfmbs
