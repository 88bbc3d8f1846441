// TaskQueue: the asynchronous, in-order submission queue of one fabric
// instance. Tasks run one after another, in submission order, on a single
// worker thread that sleeps on a condition variable while idle (no spinning
// on 2-core machines). A task's exception is kept and rethrown by wait(id);
// one nobody waited for is rethrown by the next wait_all() - an error is
// never lost. Submitting from several threads at once is safe. The
// destructor runs every queued task before it returns.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace tfmbs::fabric {

using TaskId = uint64_t;  // 1, 2, 3, ... in submission order; 0 is never used

class TaskQueue {
 public:
  explicit TaskQueue(std::string name = "fabric");
  ~TaskQueue();
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  TaskId submit(std::function<void()> task);
  // Blocks until task `id` has run; rethrows its exception if it threw
  // (every time it is asked). An id never returned by submit() throws
  // std::invalid_argument; waiting, from inside a task, for a task that
  // has not run yet throws std::logic_error (it would deadlock).
  void wait(TaskId id);
  // Whether task `id` has run (an unknown id throws std::invalid_argument).
  bool is_done(TaskId id) const;
  // Blocks until every task submitted so far has run; rethrows the
  // earliest exception not yet reported by wait() or wait_all().
  void wait_all();

  TaskId last_submitted() const;
  const std::string& name() const { return name_; }

 private:
  void run();
  void check_known(TaskId id) const;  // requires mu_

  struct Failure {
    std::exception_ptr error;
    bool reported = false;
  };

  const std::string name_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // worker: a task arrived or stopping
  std::condition_variable done_cv_;  // waiters: a task finished
  std::deque<std::function<void()>> pending_;
  std::map<TaskId, Failure> failures_;
  TaskId submitted_ = 0;
  TaskId completed_ = 0;
  bool stopping_ = false;
  std::thread worker_;  // last: starts after the members above exist
};

}  // namespace tfmbs::fabric
