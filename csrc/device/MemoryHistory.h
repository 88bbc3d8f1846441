// The pools' allocation histories (fabric/pool_history.h) with the context
// torch.cuda's allocator records: the Python stack of the call that
// allocated (and, if asked, freed), captured as torch's CapturedTraceback.
#pragma once

#include <c10/core/Device.h>

#include <cstddef>

namespace tfmbs {

// Which calls keep their stack, as torch.cuda.memory._record_memory_history's
// `context`: none, allocations, or allocations and frees.
enum class HistoryStacks { None, Alloc, All };

// Records the newest `max_entries` events of `device`'s pool (0: stops and
// forgets them).
void record_memory_history(c10::DeviceIndex device, size_t max_entries, HistoryStacks stacks);

}  // namespace tfmbs
