#include "device/OpLog.h"

#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace tfmbs {
namespace {

struct Row {
  std::thread::id thread;
  OpRecord record;
};

struct Session {
  std::thread::id thread;
  bool all_threads;
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

thread_local std::vector<uint64_t> t_correlation;
thread_local const OpOrigin* t_origin = nullptr;

}  // namespace

bool op_log_enabled() { return g_profilers.load(std::memory_order_relaxed) > 0; }

uint64_t op_log_start(bool all_threads) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const uint64_t id = g_next_session++;
  (*g_sessions)[id] = {std::this_thread::get_id(), all_threads, g_dropped + g_rows->size()};
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
    if (s.all_threads || (*g_rows)[i].thread == s.thread) out.push_back((*g_rows)[i].record);
  }
  if (g_sessions->empty()) {
    g_dropped += g_rows->size();
    g_rows->clear();
  }
  return out;
}

void op_log_append(OpRecord record) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_profilers > 0) g_rows->push_back({t_origin ? t_origin->thread : std::this_thread::get_id(), std::move(record)});
}

void op_log_push_correlation(uint64_t id) { t_correlation.push_back(id); }

void op_log_pop_correlation() {
  if (!t_correlation.empty()) t_correlation.pop_back();
}

uint64_t op_log_current_correlation() {
  if (t_origin) return t_origin->correlation;
  return t_correlation.empty() ? 0 : t_correlation.back();
}

OpOrigin op_log_origin(int64_t stream) { return {std::this_thread::get_id(), op_log_current_correlation(), stream}; }

OpOriginScope::OpOriginScope(const OpOrigin& origin) : previous_(std::exchange(t_origin, &origin)) {}
OpOriginScope::~OpOriginScope() { t_origin = previous_; }

const OpOrigin* op_log_borrowed_origin() { return t_origin; }

}  // namespace tfmbs
