// Storages that set_ made shared between tensors. Such tensors have version
// counters of their own, so a write through one is invisible to the
// others' counters; caches keyed on a version (the ternary op's frames)
// must check these storages' contents instead.
#pragma once

#include <c10/core/Storage.h>

namespace tfmbs {

void mark_shared_by_set(const c10::Storage& storage);
bool is_shared_by_set(const c10::Storage& storage);

}  // namespace tfmbs
