#include "fabric/task_queue.h"

#include <cstdio>
#include <stdexcept>

namespace tfmbs::fabric {

TaskQueue::TaskQueue(std::string name) : name_(std::move(name)), worker_([this] { run(); }) {}

TaskQueue::~TaskQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_one();
  worker_.join();  // the worker drains pending_ before it exits
  size_t unreported = 0;
  for (const auto& [id, failure] : failures_) unreported += failure.reported ? 0 : 1;
  if (unreported != 0)  // cannot throw from a destructor: say it at least
    std::fprintf(stderr, "tfmbs: queue '%s' destroyed with %zu failed task(s) never waited for\n",
                 name_.c_str(), unreported);
}

TaskId TaskQueue::submit(std::function<void()> task) {
  if (!task) throw std::invalid_argument("TaskQueue '" + name_ + "': submit() got an empty task");
  TaskId id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(task));
    id = ++submitted_;
  }
  work_cv_.notify_one();
  return id;
}

void TaskQueue::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping and drained
    std::function<void()> task = std::move(pending_.front());
    pending_.pop_front();
    const TaskId id = completed_ + 1;
    lock.unlock();
    std::exception_ptr error;
    try {
      task();
    } catch (...) {
      error = std::current_exception();
    }
    task = nullptr;  // release captures outside the lock
    lock.lock();
    if (error) failures_[id].error = error;
    completed_ = id;
    done_cv_.notify_all();
  }
}

void TaskQueue::check_known(TaskId id) const {
  if (id == 0 || id > submitted_)
    throw std::invalid_argument("TaskQueue '" + name_ + "': task id " + std::to_string(id) +
                                " was never submitted (ids so far: 1.." + std::to_string(submitted_) + ")");
}

void TaskQueue::wait(TaskId id) {
  std::unique_lock<std::mutex> lock(mu_);
  check_known(id);
  if (id > completed_ && std::this_thread::get_id() == worker_.get_id())
    throw std::logic_error("TaskQueue '" + name_ + "': task " + std::to_string(completed_ + 1) +
                           " waits for task " + std::to_string(id) + ", which runs after it");
  done_cv_.wait(lock, [&] { return completed_ >= id; });
  auto it = failures_.find(id);
  if (it != failures_.end()) {
    it->second.reported = true;
    std::rethrow_exception(it->second.error);
  }
}

bool TaskQueue::is_done(TaskId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  check_known(id);
  return completed_ >= id;
}

void TaskQueue::wait_all() {
  std::unique_lock<std::mutex> lock(mu_);
  const TaskId target = submitted_;
  if (target > completed_ && std::this_thread::get_id() == worker_.get_id())
    throw std::logic_error("TaskQueue '" + name_ + "': wait_all() called from inside a task");
  done_cv_.wait(lock, [&] { return completed_ >= target; });
  for (auto& [id, failure] : failures_) {
    if (id > target) break;
    if (!failure.reported) {
      failure.reported = true;
      std::rethrow_exception(failure.error);
    }
  }
}

TaskId TaskQueue::last_submitted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return submitted_;
}

}  // namespace tfmbs::fabric
