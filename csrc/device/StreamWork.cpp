#include "device/StreamWork.h"

#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <mutex>
#include <string>
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

struct DeviceWorkers {
  std::array<std::shared_ptr<fabric::TaskQueue>, kWorkers> queues;
};

std::mutex g_mutex;
auto* g_devices = new std::vector<DeviceWorkers>;  // leaked: workers may outlive statics
// Work queued and not yet run, anywhere; and whether any queued work ever
// failed (its failure waits for a wait on its stream). Both zero: nothing to
// await, without a lock.
std::atomic<int64_t> g_queued{0};
std::atomic<bool> g_failed{false};
std::atomic<c10::StreamId> g_next_stream{1};
BlockingWait g_blocking_wait = nullptr;

thread_local std::vector<c10::StreamId> t_current;
thread_local bool t_on_worker = false;

std::shared_ptr<fabric::TaskQueue> find_queue(c10::DeviceIndex device, c10::StreamId id, bool create) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_devices->size() <= static_cast<size_t>(device)) {
    if (!create) return nullptr;
    g_devices->resize(static_cast<size_t>(device) + 1);
  }
  auto& queue = (*g_devices)[static_cast<size_t>(device)].queues[worker_of(id)];
  if (!queue && create)
    queue = std::make_shared<fabric::TaskQueue>("tfmbs:" + std::to_string(device) + " stream worker " +
                                                std::to_string(worker_of(id)));
  return queue;
}

void blocking(const std::function<void()>& wait) {
  if (g_blocking_wait) g_blocking_wait(wait);
  else wait();
}

bool nothing_to_await() { return g_queued.load(std::memory_order_acquire) == 0 && !g_failed.load(); }

void drain(const std::shared_ptr<fabric::TaskQueue>& queue) {
  if (queue) blocking([&] { queue->wait_all(); });
}

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
    const fabric::TaskId task = queue->submit([work = std::move(work), origin]() mutable {
      t_on_worker = true;
      struct Done {
        std::function<void()>& work;
        ~Done() {
          work = nullptr;  // the tensors it holds go back before anyone sees it done
          --g_queued;
        }
      } done{work};
      OpOriginScope scope(origin);
      try {
        work();
      } catch (...) {
        g_failed = true;
        throw;
      }
    });
    return {std::move(queue), task};
  } catch (...) {
    --g_queued;
    throw;
  }
}

void await_current_stream(c10::DeviceIndex device) {
  if (nothing_to_await() || t_on_worker) return;
  drain(find_queue(device, current_stream_id(device), /*create=*/false));
}

void await_current_streams() {
  if (nothing_to_await() || t_on_worker) return;
  for (c10::DeviceIndex d = 0; d < device_count(); ++d) await_current_stream(d);
}

StreamMark mark_stream(c10::DeviceIndex device, c10::StreamId id) {
  auto queue = find_queue(device, id, /*create=*/false);
  if (!queue) return {};
  const fabric::TaskId task = queue->last_submitted();
  if (task == 0 || queue->is_done(task)) return {};
  return {std::move(queue), task};
}

bool mark_reached(const StreamMark& mark) { return !mark.queue || mark.queue->is_done(mark.task); }

void await_mark(const StreamMark& mark) {
  if (mark.queue) blocking([&] { mark.queue->wait(mark.task); });
}

void stream_wait_mark(c10::DeviceIndex device, c10::StreamId id, const StreamMark& mark) {
  if (mark_reached(mark)) return;
  // A worker runs its work in order: a mark on its own queue is reached by then.
  if (find_queue(device, id, /*create=*/false) == mark.queue) return;
  queue_work_on(device, id, [mark] { mark.queue->wait(mark.task); });
}

bool stream_idle(c10::DeviceIndex device, c10::StreamId id) { return mark_reached(mark_stream(device, id)); }

void synchronize_stream(c10::DeviceIndex device, c10::StreamId id) {
  if (t_on_worker) return;
  drain(find_queue(device, id, /*create=*/false));
}

void synchronize_streams(c10::DeviceIndex device) {
  if (t_on_worker) return;
  for (size_t w = 0; w < kWorkers; ++w) {
    std::shared_ptr<fabric::TaskQueue> queue;
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      if (static_cast<size_t>(device) < g_devices->size()) queue = (*g_devices)[static_cast<size_t>(device)].queues[w];
    }
    drain(queue);
  }
}

void set_blocking_wait(BlockingWait wait) { g_blocking_wait = wait; }

}  // namespace tfmbs
