#include "device/OpLog.h"

#include <map>
#include <mutex>
#include <thread>

namespace tfmbs {
namespace {

struct Row {
  std::thread::id thread;
  OpRecord record;
};

struct Session {
  std::thread::id thread;
  uint64_t first_row;  // absolute index of the first row it may see
};

std::atomic<int> g_profilers{0};
std::mutex g_mutex;
// Leaked, as every singleton. Rows are kept while any session is open;
// g_dropped counts the rows cleared before rows->front().
auto* g_rows = new std::vector<Row>;
uint64_t g_dropped = 0;
auto* g_sessions = new std::map<uint64_t, Session>;
uint64_t g_next_session = 1;

}  // namespace

bool op_log_enabled() { return g_profilers.load(std::memory_order_relaxed) > 0; }

uint64_t op_log_start() {
  std::lock_guard<std::mutex> lock(g_mutex);
  const uint64_t id = g_next_session++;
  (*g_sessions)[id] = {std::this_thread::get_id(), g_dropped + g_rows->size()};
  ++g_profilers;
  return id;
}

std::vector<OpRecord> op_log_stop(uint64_t session) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_sessions->find(session);
  if (it == g_sessions->end()) return {};
  const Session s = it->second;
  g_sessions->erase(it);
  --g_profilers;
  std::vector<OpRecord> out;
  for (uint64_t i = s.first_row - g_dropped; i < g_rows->size(); ++i) {
    if ((*g_rows)[i].thread == s.thread) out.push_back((*g_rows)[i].record);
  }
  if (g_sessions->empty()) {
    g_dropped += g_rows->size();
    g_rows->clear();
  }
  return out;
}

void op_log_append(OpRecord record) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_profilers > 0) g_rows->push_back({std::this_thread::get_id(), std::move(record)});
}

}  // namespace tfmbs
