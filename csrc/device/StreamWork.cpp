#include "device/StreamWork.h"

#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "device/OpLog.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {
namespace {

// Streams share a few workers per device, as CUDA's streams share a pool:
// the default stream has one, side streams take the others in turn. Two
// streams on one worker run one after the other, which is a stricter order
// than the program asked for, never a looser one.
constexpr size_t kWorkers = 4;

size_t worker_of(c10::StreamId id) {
  return id == 0 ? 0 : 1 + static_cast<size_t>(id - 1) % (kWorkers - 1);
}

using StreamKey = std::pair<c10::DeviceIndex, c10::StreamId>;

std::mutex g_mutex;  // guards the two maps
// Leaked: workers may still run while statics are destroyed at exit.
auto* g_queues = new std::map<std::pair<c10::DeviceIndex, size_t>, std::shared_ptr<fabric::TaskQueue>>;
// The first failure of each stream's queued work, until a wait on that
// stream raises it. Kept per stream, not per worker: a stream sharing a
// worker never takes another's failure.
auto* g_failures = new std::map<StreamKey, std::exception_ptr>;
// Work queued and not yet run, and failures not yet raised, anywhere. Both
// zero: nothing to wait for, known without a lock.
std::atomic<int64_t> g_queued{0};
std::atomic<int64_t> g_unraised{0};
std::atomic<c10::StreamId> g_next_stream{1};
std::atomic<bool> g_started{false};
BlockingWait g_blocking_wait = nullptr;

thread_local std::vector<c10::StreamId> t_current;
thread_local bool t_on_worker = false;

std::shared_ptr<fabric::TaskQueue> find_queue(c10::DeviceIndex device, c10::StreamId id, bool create) {
  const std::pair<c10::DeviceIndex, size_t> key{device, worker_of(id)};
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_queues->find(key);
  if (it != g_queues->end()) return it->second;
  if (!create) return nullptr;
  g_started = true;
  auto queue = std::make_shared<fabric::TaskQueue>("tfmbs:" + std::to_string(device) + " stream worker " +
                                                   std::to_string(key.second));
  g_queues->emplace(key, queue);
  return queue;
}

std::vector<std::shared_ptr<fabric::TaskQueue>> device_queues(c10::DeviceIndex device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<std::shared_ptr<fabric::TaskQueue>> out;
  for (const auto& [key, queue] : *g_queues)
    if (key.first == device) out.push_back(queue);
  return out;
}

void record_failure(StreamKey stream, std::exception_ptr error) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_failures->emplace(stream, std::move(error)).second) ++g_unraised;
}

std::exception_ptr peek_failure(StreamKey stream) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_failures->find(stream);
  return it == g_failures->end() ? nullptr : it->second;
}

// Raises stream's failure, once. `any_stream_of_device`: the first failure
// of any stream of the device (synchronizing a device reports them all).
void raise_failure(StreamKey stream, bool any_stream_of_device = false) {
  if (g_unraised.load() == 0) return;
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_failures->find(stream);
    if (any_stream_of_device && it == g_failures->end()) {
      it = g_failures->lower_bound({stream.first, 0});
      if (it != g_failures->end() && it->first.first != stream.first) it = g_failures->end();
    }
    if (it == g_failures->end()) return;
    error = it->second;
    g_failures->erase(it);
    --g_unraised;
  }
  std::rethrow_exception(error);
}

void blocking(const std::function<void()>& wait) {
  if (g_blocking_wait) g_blocking_wait(wait);
  else wait();
}

void drain(const std::shared_ptr<fabric::TaskQueue>& queue) {
  if (queue) blocking([&] { queue->wait_all(); });
}

bool nothing_to_await() { return g_queued.load(std::memory_order_acquire) == 0 && g_unraised.load() == 0; }

}  // namespace

c10::StreamId current_stream_id(c10::DeviceIndex device) {
  const auto i = static_cast<size_t>(device);
  return i < t_current.size() ? t_current[i] : 0;
}

c10::StreamId exchange_stream_id(c10::DeviceIndex device, c10::StreamId id) {
  const auto i = static_cast<size_t>(device);
  if (t_current.size() <= i) t_current.resize(i + 1, 0);
  return std::exchange(t_current[i], id);
}

c10::StreamId new_stream_id() { return g_next_stream++; }

bool stream_workers_started() { return g_started.load(); }

bool queues_work(c10::DeviceIndex device, bool default_stream_too) {
  return !t_on_worker && (default_stream_too || current_stream_id(device) != 0);
}

void queue_work(c10::DeviceIndex device, std::function<void()> work) {
  queue_work_on(device, current_stream_id(device), std::move(work));
}

StreamMark queue_work_on(c10::DeviceIndex device, c10::StreamId id, std::function<void()> work) {
  check_not_forked();
  auto queue = find_queue(device, id, /*create=*/true);
  // The work's rows in the op log belong to the op that queued it.
  OpOrigin origin = op_log_origin(id);
  ++g_queued;
  try {
    const fabric::TaskId task = queue->submit([work = std::move(work), origin, device, id]() mutable {
      t_on_worker = true;
      OpOriginScope scope(origin);
      try {
        work();
      } catch (...) {
        record_failure({device, id}, std::current_exception());
      }
      work = nullptr;  // the tensors it holds go back before anyone sees it done
      --g_queued;
    });
    return {std::move(queue), task, device, id};
  } catch (...) {
    --g_queued;
    throw;
  }
}

void await_current_stream(c10::DeviceIndex device) {
  if (nothing_to_await() || t_on_worker) return;
  const c10::StreamId id = current_stream_id(device);
  drain(find_queue(device, id, /*create=*/false));
  raise_failure({device, id});
}

void await_current_streams() {
  if (nothing_to_await() || t_on_worker) return;
  check_not_forked();
  for (c10::DeviceIndex d = 0; d < device_count(); ++d) await_current_stream(d);
}

StreamMark mark_stream(c10::DeviceIndex device, c10::StreamId id) {
  StreamMark mark{nullptr, 0, device, id};
  auto queue = find_queue(device, id, /*create=*/false);
  if (!queue) return mark;
  const fabric::TaskId task = queue->last_submitted();
  if (task == 0 || queue->is_done(task)) return mark;
  mark.queue = std::move(queue);
  mark.task = task;
  return mark;
}

bool mark_reached(const StreamMark& mark) { return !mark.queue || mark.queue->is_done(mark.task); }

void await_mark(const StreamMark& mark) {
  if (mark.queue) {
    check_not_forked();
    blocking([&] { mark.queue->wait(mark.task); });
  }
  raise_failure({mark.device, mark.stream});
}

void stream_wait_mark(c10::DeviceIndex device, c10::StreamId id, const StreamMark& mark) {
  // What the waiting stream reads next may be the marked work's output: a
  // failure of that work becomes the waiting stream's too.
  if (mark_reached(mark)) {
    if (std::exception_ptr error = peek_failure({mark.device, mark.stream})) record_failure({device, id}, error);
    return;
  }
  // On the mark's own worker the wait returns at once (its work runs in
  // order); it is queued all the same, to pass a failure on.
  queue_work_on(device, id, [mark] {
    mark.queue->wait(mark.task);
    if (std::exception_ptr error = peek_failure({mark.device, mark.stream})) std::rethrow_exception(error);
  });
}

bool stream_idle(c10::DeviceIndex device, c10::StreamId id) {
  check_not_forked();
  return mark_reached(mark_stream(device, id));
}

void synchronize_stream(c10::DeviceIndex device, c10::StreamId id) {
  if (t_on_worker) return;
  check_not_forked();
  drain(find_queue(device, id, /*create=*/false));
  raise_failure({device, id});
}

void synchronize_streams(c10::DeviceIndex device) {
  if (t_on_worker) return;
  check_not_forked();
  settle_streams(device);
  raise_failure({device, 0}, /*any_stream_of_device=*/true);
}

bool settle_streams(c10::DeviceIndex device) {
  if (t_on_worker || g_queued.load() == 0) return false;
  for (const auto& queue : device_queues(device)) drain(queue);
  return true;
}

void set_blocking_wait(BlockingWait wait) { g_blocking_wait = wait; }

}  // namespace tfmbs
