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

}  // namespace tfmbs
