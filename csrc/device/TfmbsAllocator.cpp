#include "device/TfmbsAllocator.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstring>

#include "device/StreamWork.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

void delete_pool_block(void* ptr) {
  if (!ptr) return;
  c10::DeviceIndex device = device_of_pointer(ptr);
  // A deleter must not throw: it runs inside destructors.
  if (device < 0) {
    TORCH_WARN("tfmbs: freeing a pointer outside every fabric pool");
    return;
  }
  try {
    device_pool(device).free(ptr);
  } catch (const std::exception& e) {
    TORCH_WARN("tfmbs: ", e.what());
  }
}


void copy_stat_array(const fabric::StatArray& from, c10::CachingAllocator::StatArray& to) {
  for (size_t i = 0; i < from.size(); ++i) {
    to[i].current = from[i].current;
    to[i].peak = from[i].peak;
    to[i].allocated = from[i].allocated;
    to[i].freed = from[i].freed;
  }
}

class TfmbsAllocator final : public c10::DeviceAllocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    c10::DeviceIndex device = current_device();
    return allocate_in_pool(device, bytes, c10::Device(c10::DeviceType::PrivateUse1, device));
  }

  c10::DeleterFnPtr raw_deleter() const override { return &delete_pool_block; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  bool initialized() override { return true; }

  void emptyCache(c10::MempoolId_t /*mempool_id*/) override {
    for (c10::DeviceIndex i = 0; i < device_count(); ++i) device_pool(i).release_cache();
  }

  // Queued work holds the tensors it uses (StreamWork.h): a block is never
  // in use by a stream after it is freed.
  void recordStream(const c10::DataPtr&, c10::Stream) override {}

  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex device) override {
    fabric::PoolStats from = device_pool(resolve_device(device)).stats();
    c10::CachingDeviceAllocator::DeviceStats to;
    copy_stat_array(from.allocation, to.allocation);
    copy_stat_array(from.segment, to.segment);
    copy_stat_array(from.active, to.active);
    copy_stat_array(from.inactive_split, to.inactive_split);
    copy_stat_array(from.allocated_bytes, to.allocated_bytes);
    copy_stat_array(from.reserved_bytes, to.reserved_bytes);
    copy_stat_array(from.active_bytes, to.active_bytes);
    copy_stat_array(from.inactive_split_bytes, to.inactive_split_bytes);
    copy_stat_array(from.requested_bytes, to.requested_bytes);
    to.num_alloc_retries = from.num_alloc_retries;
    to.num_ooms = from.num_ooms;
    to.num_device_alloc = from.num_device_alloc;
    to.num_device_free = from.num_device_free;
    return to;
  }

  void resetAccumulatedStats(c10::DeviceIndex device) override {
    device_pool(resolve_device(device)).reset_accumulated_stats();
  }

  void resetPeakStats(c10::DeviceIndex device) override {
    device_pool(resolve_device(device)).reset_peak_stats();
  }

  std::pair<size_t, size_t> getMemoryInfo(c10::DeviceIndex device) override {
    auto& pool = device_pool(resolve_device(device));
    auto reserved = static_cast<size_t>(pool.stats().reserved_bytes[fabric::kAll].current);
    return {pool.capacity() - reserved, pool.capacity()};
  }
};

// Leaked on purpose: blocks may be freed during interpreter shutdown.
TfmbsAllocator* g_allocator = new TfmbsAllocator;
REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, g_allocator)

}  // namespace

c10::DataPtr allocate_in_pool(c10::DeviceIndex device, size_t bytes, c10::Device data_device) {
  check_not_forked();
  auto& pool = device_pool(device);
  void* ptr = nullptr;
  try {
    try {
      ptr = pool.allocate(bytes);
    } catch (const fabric::OutOfMemory&) {
      // As CUDA's allocator synchronizes before it gives up: queued work
      // holds tensors that may be garbage once it has run.
      if (!settle_streams(device)) throw;
      ptr = pool.allocate(bytes);
    }
  } catch (const fabric::OutOfMemory& e) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, e.what());
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, e.what());
  }
  return {ptr, ptr, &delete_pool_block, data_device};
}

c10::DeviceAllocator* tfmbs_allocator() { return g_allocator; }

}  // namespace tfmbs
