#include "device/MemoryHistory.h"

#include <torch/csrc/profiler/combined_traceback.h>

#include <memory>

#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

std::shared_ptr<const void> python_stack() {
  return torch::CapturedTraceback::gather(/*python=*/true, /*script=*/false, /*cpp=*/false);
}

std::shared_ptr<const void> stack_of_allocs(fabric::PoolEvent event) {
  return event == fabric::PoolEvent::Alloc ? python_stack() : nullptr;
}

std::shared_ptr<const void> stack_of_every_call(fabric::PoolEvent) { return python_stack(); }

}  // namespace

void record_memory_history(c10::DeviceIndex device, size_t max_entries, HistoryStacks stacks) {
  const fabric::FabricPool::ContextProvider provider = stacks == HistoryStacks::All     ? &stack_of_every_call
                                                       : stacks == HistoryStacks::Alloc ? &stack_of_allocs
                                                                                         : nullptr;
  device_pool(device).record_history(max_entries, provider);
}

}  // namespace tfmbs
