// Resident frames of packed ternary weights on tfmbs devices: the weights of
// a packed tensor in the fast engine's layout (and, for the reference
// engine, the spec's lane-major layout), built in the device's pool once and
// reused by every call while the packed bytes are known unchanged:
// - keyed by the packed tensor's storage (identity and lifetime, never its
//   address), offset, shape and packing;
// - known unchanged through the tensor's version counter, or, for tensors
//   whose writes no version counter sees (inference tensors, storages set_
//   shares), through a fingerprint of the packed bytes;
// - residency is the device's FrameResidency: least recently used frames
//   give way when any allocation finds the pool full, and are rebuilt from
//   the packed tensor on their next use; a frame in use is never evicted.
// A frame leaves the pool when its packed tensor changes, soon after the
// tensor dies (at the next miss, within 256 calls, or at frame_cache_info),
// or at frame_cache_clear.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "aten/native/TernaryArgs.h"
#include "fabric/fast_frame.h"
#include "fabric/frame_residency.h"
#include "fabric/lane_major_frame.h"

namespace tfmbs {

// The frame of one call, kept resident while this lives.
struct ResidentFrame {
  std::shared_ptr<const fabric::FastFrame> fast;
  std::shared_ptr<const fabric::LaneMajorFrame> lane_major;  // when asked for
  fabric::FrameResidency::Use in_use;
};

// The frame of `packed` (a tfmbs tensor of a.m x a.k trits in a.packing).
ResidentFrame resident_frame(const at::Tensor& packed, const LinearArgs& a, bool need_lane_major);

// One resident frame: whose packed tensor (its data pointer), where, what.
struct ResidentFrameInfo {
  c10::DeviceIndex device = 0;
  const void* packed_data = nullptr;
  int64_t rows = 0, cols = 0;
  size_t bytes = 0;  // in the device's pool
};
std::vector<ResidentFrameInfo> resident_frames();

// {frames resident, their bytes in the pools}.
std::vector<int64_t> frame_cache_info();
void frame_cache_clear();

}  // namespace tfmbs
