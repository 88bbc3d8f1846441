#include "aten/CpuAlias.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/TensorImpl.h>

#include <cstring>

#include "device/PoolCapture.h"
#include "device/StreamWork.h"
#include "device/TfmbsAllocator.h"
#include "device/TfmbsDevices.h"

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

at::Tensor alias_over(c10::Storage storage, const at::Tensor& device_tensor) {
  at::Tensor alias = make_tensor(std::move(storage), c10::DispatchKey::CPU, device_tensor.dtype(),
                                 device_tensor);
  // A lazily conjugated or negated view reads as such on CPU too.
  if (device_tensor.is_conj()) alias._set_conj(true);
  if (device_tensor.is_neg()) alias._set_neg(true);
  return alias;
}

// Non-owning: the device tensor keeps the memory alive for the alias's use.
c10::Storage cpu_storage_over(const c10::Storage& storage) {
  return c10::Storage(c10::Storage::use_byte_size_t(), storage.nbytes(),
                      c10::DataPtr(storage.mutable_data(), c10::Device(c10::kCPU)),
                      c10::GetCPUAllocator(), /*resizable=*/true);
}

}  // namespace

void check_allocated(const at::Tensor& tensor) {
  check_not_forked();
  await_current_stream(tensor.device().index());
  check_storage_holds(tensor);
}

void check_storage_holds(const at::Tensor& tensor) {
  if (tensor.numel() == 0) return;
  const c10::Storage& storage = tensor.storage();
  const size_t need = at::detail::computeStorageNbytes(tensor.sizes(), tensor.strides(),
                                                       tensor.itemsize(), tensor.storage_offset());
  TORCH_CHECK(storage.data() != nullptr && storage.nbytes() >= need,
              "The tensor has a non-zero number of elements, but its data is not allocated yet "
              "(tfmbs: a tensor of shape ", tensor.sizes(), " needs ", need,
              " bytes of its storage, which holds ", storage.nbytes(),
              "; was the storage freed or resized?)");
}

at::Tensor CpuAliases::operator()(const at::Tensor& device_tensor) {
  check_allocated(device_tensor);
  for (const auto& [device, alias] : tensors_) {
    if (device.is_same(device_tensor)) return alias;
  }
  const c10::StorageImpl* impl = device_tensor.storage().unsafeGetStorageImpl();
  const c10::Storage* storage = nullptr;
  for (const auto& [device_storage, cpu_storage] : storages_) {
    if (device_storage == impl) storage = &cpu_storage;
  }
  if (!storage) {
    storages_.emplace_back(impl, cpu_storage_over(device_tensor.storage()));
    storage = &storages_.back().second;
  }
  tensors_.emplace_back(device_tensor, alias_over(*storage, device_tensor));
  return tensors_.back().second;
}

at::Tensor cpu_alias(const at::Tensor& device_tensor) {
  check_allocated(device_tensor);
  return alias_over(cpu_storage_over(device_tensor.storage()), device_tensor);
}

at::Tensor device_view(const c10::Storage& storage, const at::Tensor& geometry,
                       caffe2::TypeMeta dtype) {
  return make_tensor(storage, c10::DispatchKey::PrivateUse1, dtype, geometry);
}

at::Tensor same_memory(const at::Tensor& tensor) {
  const auto key = tensor.device().type() == c10::DeviceType::PrivateUse1 ? c10::DispatchKey::PrivateUse1
                                                                           : c10::DispatchKey::CPU;
  // An inference tensor exactly when `tensor` is, sharing its version
  // counter otherwise: the frame cache tells a weight's changes by them.
  c10::InferenceMode mode(tensor.is_inference());
  at::Tensor out = make_tensor(tensor.storage(), key, tensor.dtype(), tensor);
  if (!tensor.is_inference())
    out.unsafeGetTensorImpl()->set_version_counter(tensor.unsafeGetTensorImpl()->version_counter());
  if (tensor.is_conj()) out._set_conj(true);
  if (tensor.is_neg()) out._set_neg(true);
  return out;
}

at::Tensor adopt_pool_tensor(const at::Tensor& cpu_result, c10::DeviceIndex device) {
  const c10::Storage& storage = cpu_result.storage();
  if (!storage || !is_pool_block(storage.data_ptr()) || storage.use_count() != 1) return {};
  // Nobody else holds the storage: it becomes the device's as it is.
  c10::StorageImpl* impl = storage.unsafeGetStorageImpl();
  impl->mutable_data_ptr().unsafe_set_device(c10::Device(c10::DeviceType::PrivateUse1, device));
  impl->set_allocator(tfmbs_allocator());
  return device_view(storage, cpu_result, cpu_result.dtype());
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
    // The kernel resized its output: its new bytes become the device
    // storage's, taken over when they already are a block of the device's
    // pool (PoolCapture), else copied into one.
    const c10::Device device = original.device();
    const size_t nbytes = alias_storage->nbytes();
    void* bytes = alias_storage->mutable_data();
    c10::DataPtr fresh;
    if (is_pool_block(alias_storage->data_ptr()) && device_of_pointer(bytes) == device.index()) {
      fresh = alias_storage->set_data_ptr(c10::DataPtr(bytes, c10::Device(c10::kCPU)));
      fresh.unsafe_set_device(device);
    } else {
      fresh = allocate_in_pool(device.index(), nbytes, device);
      if (nbytes > 0) std::memcpy(fresh.get(), bytes, nbytes);
      // Other aliases of this storage now see the device's new bytes.
      alias_storage->set_data_ptr_noswap(c10::DataPtr(fresh.get(), c10::Device(c10::kCPU)));
    }
    settle_streams(device.index());  // queued work on any stream may still use the old bytes
    device_storage->set_data_ptr_noswap(std::move(fresh));
    device_storage->set_nbytes(nbytes);
  }
  auto* impl = original.unsafeGetTensorImpl();
  if (original.sizes() != alias.sizes() || original.strides() != alias.strides() ||
      original.storage_offset() != alias.storage_offset()) {
    impl->set_sizes_and_strides(alias.sizes(), alias.strides(), alias.storage_offset());
  }
}

}  // namespace tfmbs
