#include "device/PinnedHostAllocator.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <mutex>
#include <unordered_set>

namespace tfmbs {
namespace {

constexpr size_t kAlignment = 64;

std::mutex g_mutex;
auto* g_blocks = new std::unordered_set<const void*>;  // leaked, as every singleton

void free_pinned(void* ptr) {
  if (!ptr) return;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_blocks->erase(ptr);
  }
  std::free(ptr);
}

class PinnedHostAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    void* ptr = nullptr;
    if (bytes > 0) {
      ptr = std::aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
      TORCH_CHECK_WITH(OutOfMemoryError, ptr != nullptr,
                       "tfmbs: cannot allocate ", bytes, " bytes of pinned host memory");
      std::lock_guard<std::mutex> lock(g_mutex);
      g_blocks->insert(ptr);
    }
    return {ptr, ptr, &free_pinned, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_pinned; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

}  // namespace

c10::Allocator* pinned_host_allocator() {
  static auto* allocator = new PinnedHostAllocator;  // leaked: outlives exit
  return allocator;
}

bool is_pinned_host_pointer(const void* ptr) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_blocks->count(ptr) > 0;
}

}  // namespace tfmbs
