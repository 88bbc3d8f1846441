#include "aten/SharedStorages.h"

#include <atomic>
#include <mutex>
#include <vector>

namespace tfmbs {
namespace {

std::mutex g_mutex;
// Weak: an entry keeps its StorageImpl's address from being reused, not its
// memory alive. Leaked, as every singleton.
auto* g_shared = new std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>>;
std::atomic<bool> g_any{false};

}  // namespace

void mark_shared_by_set(const c10::Storage& storage) {
  if (!storage) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  std::erase_if(*g_shared, [](const auto& weak) { return weak.expired(); });
  for (const auto& weak : *g_shared) {
    if (weak._unsafe_get_target() == storage.unsafeGetStorageImpl()) return;
  }
  g_shared->push_back(storage.getWeakStorageImpl());
  g_any = true;
}

bool is_shared_by_set(const c10::Storage& storage) {
  if (!g_any.load(std::memory_order_relaxed)) return false;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const auto& weak : *g_shared) {
    if (weak._unsafe_get_target() == storage.unsafeGetStorageImpl() && !weak.expired()) return true;
  }
  return false;
}

}  // namespace tfmbs
