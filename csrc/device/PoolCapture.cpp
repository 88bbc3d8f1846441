#include "device/PoolCapture.h"

#include <c10/core/CPUAllocator.h>

#include <mutex>

#include "device/TfmbsAllocator.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

thread_local c10::DeviceIndex t_capture = -1;
c10::DeleterFnPtr g_base_raw_deleter = nullptr;
c10::DeleterFnPtr g_pool_deleter = nullptr;

// raw_allocate() frees with raw_deleter(), whichever allocation it got.
void raw_delete_either(void* ptr) {
  if (device_of_pointer(ptr) >= 0) {
    g_pool_deleter(ptr);
  } else if (g_base_raw_deleter) {
    g_base_raw_deleter(ptr);
  }
}

class CapturingCpuAllocator final : public c10::Allocator {
 public:
  explicit CapturingCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t bytes) override {
    if (t_capture >= 0 && bytes > 0) {
      return allocate_in_pool(t_capture, bytes, c10::Device(c10::DeviceType::CPU));
    }
    return base_->allocate(bytes);
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return g_base_raw_deleter ? &raw_delete_either : nullptr;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    base_->copy_data(dest, src, count);
  }

 private:
  c10::Allocator* base_;
};

}  // namespace

void install_capturing_cpu_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::Allocator* base = c10::GetCPUAllocator();
    g_base_raw_deleter = base->raw_deleter();
    g_pool_deleter = tfmbs_allocator()->raw_deleter();
    // Leaked: CPU tensors may be freed during interpreter shutdown.
    c10::SetCPUAllocator(new CapturingCpuAllocator(base), /*priority=*/100);
  });
}

PoolCapture::PoolCapture(c10::DeviceIndex device) : previous_(t_capture) { t_capture = device; }

PoolCapture::~PoolCapture() { t_capture = previous_; }

bool is_pool_block(const c10::DataPtr& data_ptr) {
  return data_ptr.get_deleter() == g_pool_deleter && g_pool_deleter != nullptr;
}

}  // namespace tfmbs
