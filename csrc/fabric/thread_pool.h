// The fast engine's own thread pool. Workers block on a condition variable
// while idle (never spin: these are 2-core VMs shared with PyTorch's own
// threads); the calling thread always takes part in the work, so a pool of
// n threads has n-1 workers and a 1-thread call never touches them.
// Tasks are handed out with affinity: participant p first runs the p-th
// contiguous share of the task range in order (so repeated calls over the
// same data find it in the same core's cache), then steals what is left of
// the other shares (so a busy or slow core does not stall the call).
// The caller never waits for a worker that has not woken up by the time
// every task is claimed: such a worker skips the job (a sleeping thread can
// take tens of microseconds to wake on a VM).
// A host framework can lend the pool its own team of threads (use_team):
// jobs then run on that team, with the same shares and stealing, and the
// pool's workers are gone, so the framework's threads and the engine's
// never compete for the cores, and a team that polls after its work (as
// OpenMP's does) starts the engine's job without a wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tfmbs::fabric {

class ThreadPool {
 public:
  // threads >= 1 (else std::invalid_argument naming the value); 0 means the
  // hardware's core count.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return team_.run ? team_.size() : static_cast<int>(workers_.size()) + 1; }
  // Waits for a running job, then replaces the workers (same rules as the
  // constructor) and stops using a team.
  void resize(int threads);

  // Threads lent by someone else: size() is how many it runs at once now;
  // run(n, body, ctx) calls body(ctx, p) for p in [0, n) concurrently
  // (p = 0 on the calling thread; fewer threads may serve them, one after
  // another) and returns when every call has returned.
  struct Team {
    int (*size)() = nullptr;
    void (*run)(int n, void (*body)(void* ctx, int participant), void* ctx) = nullptr;
  };
  // Waits for a running job; from then on jobs run on `team` and the
  // pool's own workers are stopped.
  void use_team(Team team);

  // Runs fn(i) for every i in [0, tasks) on at most max_threads threads
  // (<= 0: all of the pool's), the caller included; returns when all are
  // done. If a task throws, remaining tasks are skipped and the first
  // exception is rethrown here. Jobs from different callers run one after
  // another; a call from inside a task runs inline.
  void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn, int max_threads = 0);

  // The process-wide pool (hardware core count; never destroyed).
  static ThreadPool& global();
  static int hardware_threads();

 private:
  void start(int threads);
  void stop();
  void worker_loop(int index);
  void run_tasks(int participant);
  void run_on_team(int threads);

  struct Share {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };

  std::mutex submit_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
  uint64_t generation_ = 0;
  int participants_ = 0;  // workers invited to the current job
  bool job_open_ = false; // false once the caller has run out of tasks to claim
  int running_ = 0;       // workers that joined the current job and are still in it
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t tasks_ = 0;
  int shares_ = 0;  // participants of the current job, caller included
  std::unique_ptr<Share[]> share_;  // one per possible participant
  std::exception_ptr error_;
  Team team_;
};

}  // namespace tfmbs::fabric
