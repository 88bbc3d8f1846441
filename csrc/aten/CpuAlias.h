// Zero-copy CPU views of tfmbs tensors and back. The emulated fabric pool is
// host memory, so PyTorch's CPU kernels can run on it directly.
#pragma once

#include <ATen/core/Tensor.h>

namespace tfmbs {

// A CPU tensor over the same bytes as `device_tensor` (same sizes, strides
// and storage offset; its storage covers the whole device storage and does
// not own it). Resizing it allocates new memory rather than touching the
// device storage: adopt_resized() carries such a change back.
at::Tensor cpu_alias(const at::Tensor& device_tensor);

// A tfmbs tensor over `storage` (a device storage) with the given geometry.
at::Tensor device_view(const c10::Storage& storage, const at::Tensor& geometry,
                       caffe2::TypeMeta dtype);

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

// After a CPU kernel ran on `alias` (= cpu_alias(original)), makes
// `original` show what the kernel did to it: a resize or re-point of the
// alias's storage, and changed sizes/strides/offset.
void sync_back(const at::Tensor& original, const at::Tensor& alias);

}  // namespace tfmbs
