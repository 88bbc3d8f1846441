// The c10 allocator of tfmbs devices: blocks of the device's fabric pool,
// with CUDA-style statistics. A c10::DeviceAllocator, so torch.accelerator's
// memory API works on it.
#pragma once

#include <c10/core/CachingDeviceAllocator.h>

namespace tfmbs {

// Allocates `bytes` in the pool of `device`, as a DataPtr whose device is
// `data_device` (PrivateUse1 normally; CPU for the fallback's captured
// outputs). Throws c10::OutOfMemoryError with the pool's numbers.
c10::DataPtr allocate_in_pool(c10::DeviceIndex device, size_t bytes,
                              c10::Device data_device);

c10::DeviceAllocator* tfmbs_allocator();

// Total bytes copied host->device and device->host.
struct TransferCounters {
  int64_t bytes_h2d = 0, bytes_d2h = 0, bytes_d2d = 0;
};
TransferCounters transfer_counters();
void count_transfer(c10::DeviceType from, c10::DeviceType to, int64_t bytes);
void reset_transfer_counters();

}  // namespace tfmbs
