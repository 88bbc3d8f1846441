#include "aten/CpuAlias.h"

#include <ATen/ops/empty_strided.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/TensorImpl.h>

#include "device/PoolCapture.h"
#include "device/TfmbsAllocator.h"

namespace tfmbs {
namespace {

at::Tensor make_tensor(c10::Storage storage, c10::DispatchKey key, caffe2::TypeMeta dtype,
                       const at::Tensor& geometry) {
  auto tensor = at::detail::make_tensor<c10::TensorImpl>(std::move(storage),
                                                         c10::DispatchKeySet(key), dtype);
  tensor.unsafeGetTensorImpl()->set_sizes_and_strides(geometry.sizes(), geometry.strides(),
                                                      geometry.storage_offset());
  return tensor;
}

}  // namespace

at::Tensor cpu_alias(const at::Tensor& device_tensor) {
  const c10::Storage& storage = device_tensor.storage();
  // Non-owning: the device tensor keeps the memory alive for the alias's use.
  c10::Storage alias_storage(c10::Storage::use_byte_size_t(), storage.nbytes(),
                             c10::DataPtr(storage.mutable_data(), c10::Device(c10::kCPU)),
                             c10::GetCPUAllocator(), /*resizable=*/true);
  at::Tensor alias = make_tensor(std::move(alias_storage), c10::DispatchKey::CPU,
                                 device_tensor.dtype(), device_tensor);
  // A lazily conjugated or negated view reads as such on CPU too.
  if (device_tensor.is_conj()) alias._set_conj(true);
  if (device_tensor.is_neg()) alias._set_neg(true);
  return alias;
}

at::Tensor device_view(const c10::Storage& storage, const at::Tensor& geometry,
                       caffe2::TypeMeta dtype) {
  return make_tensor(storage, c10::DispatchKey::PrivateUse1, dtype, geometry);
}

at::Tensor adopt_pool_tensor(const at::Tensor& cpu_result, c10::DeviceIndex device) {
  const c10::Storage& storage = cpu_result.storage();
  if (!storage || !is_pool_block(storage.data_ptr()) || storage.use_count() != 1) return {};
  c10::DataPtr data = storage.unsafeGetStorageImpl()->set_data_ptr(
      c10::DataPtr(nullptr, c10::Device(c10::kCPU)));
  data.unsafe_set_device(c10::Device(c10::DeviceType::PrivateUse1, device));
  c10::Storage device_storage(c10::Storage::use_byte_size_t(), storage.nbytes(), std::move(data),
                              tfmbs_allocator(), /*resizable=*/true);
  return device_view(device_storage, cpu_result, cpu_result.dtype());
}

std::optional<at::Tensor> cpu_alias_optional(const std::optional<at::Tensor>& tensor) {
  if (!tensor || !tensor->defined()) return tensor;
  return tensor->device().type() == c10::DeviceType::PrivateUse1 ? cpu_alias(*tensor) : *tensor;
}

at::Tensor adopt_or_copy(const at::Tensor& cpu_result, c10::DeviceIndex device) {
  if (!cpu_result.defined()) return cpu_result;
  at::Tensor adopted = adopt_pool_tensor(cpu_result, device);
  return adopted.defined() ? adopted
                           : cpu_result.to(c10::Device(c10::DeviceType::PrivateUse1, device));
}

void sync_back(const at::Tensor& original, const at::Tensor& alias) {
  c10::StorageImpl* alias_storage = alias.storage().unsafeGetStorageImpl();
  c10::StorageImpl* device_storage = original.storage().unsafeGetStorageImpl();
  if (alias_storage->data() != device_storage->data() ||
      alias_storage->nbytes() != device_storage->nbytes()) {
    // The kernel resized its output: move the new bytes into device memory.
    c10::Device device = original.device();
    c10::DataPtr fresh = allocate_in_pool(device.index(), alias_storage->nbytes(), device);
    if (alias_storage->nbytes() > 0) {
      std::memcpy(fresh.get(), alias_storage->data(), alias_storage->nbytes());
    }
    device_storage->set_data_ptr_noswap(std::move(fresh));
    device_storage->set_nbytes(alias_storage->nbytes());
  }
  auto* impl = original.unsafeGetTensorImpl();
  if (original.sizes() != alias.sizes() || original.strides() != alias.strides() ||
      original.storage_offset() != alias.storage_offset()) {
    impl->set_sizes_and_strides(alias.sizes(), alias.strides(), alias.storage_offset());
  }
}

}  // namespace tfmbs
