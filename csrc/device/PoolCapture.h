// Lets the CPU fallback run PyTorch's CPU kernels so that the tensors they
// allocate land in a tfmbs pool: while a PoolCapture lives on a thread, that
// thread's CPU allocations come from the device's pool. The fallback then
// adopts those blocks as device tensors without copying them.
#pragma once

#include <c10/core/Allocator.h>

namespace tfmbs {

// Installs the capture-aware CPU allocator (once; delegates to the previous
// CPU allocator whenever no capture is active).
void install_capturing_cpu_allocator();

class PoolCapture {
 public:
  explicit PoolCapture(c10::DeviceIndex device);
  ~PoolCapture();
  PoolCapture(const PoolCapture&) = delete;
  PoolCapture& operator=(const PoolCapture&) = delete;

 private:
  c10::DeviceIndex previous_;
};

// True when `data_ptr` is a block of a tfmbs pool (owned by its deleter).
bool is_pool_block(const c10::DataPtr& data_ptr);

}  // namespace tfmbs
