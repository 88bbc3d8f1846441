// "Pinned" host memory for tfmbs: what tensor.pin_memory() and a DataLoader
// with pin_memory=True allocate. The emulated fabric reads host memory
// directly, so pinning needs no page locking; the allocator only remembers
// its blocks so is_pinned() answers as it does for CUDA.
#pragma once

#include <c10/core/Allocator.h>

namespace tfmbs {

c10::Allocator* pinned_host_allocator();
bool is_pinned_host_pointer(const void* ptr);

}  // namespace tfmbs
