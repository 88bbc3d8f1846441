#include "device/OpLog.h"

#include <mutex>

namespace tfmbs {
namespace {

std::atomic<int> g_profilers{0};
std::mutex g_mutex;
auto* g_records = new std::vector<OpRecord>;  // leaked, as every singleton

}  // namespace

bool op_log_enabled() { return g_profilers.load(std::memory_order_relaxed) > 0; }

void op_log_start() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_profilers++ == 0) g_records->clear();
}

std::vector<OpRecord> op_log_stop() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_profilers > 0) --g_profilers;
  return *g_records;
}

void op_log_append(OpRecord record) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_profilers > 0) g_records->push_back(std::move(record));
}

}  // namespace tfmbs
