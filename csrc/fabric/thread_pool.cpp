#include "fabric/thread_pool.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace tfmbs::fabric {
namespace {
thread_local bool t_inside_pool_task = false;
constexpr int kMaxThreads = 1024;
}

int ThreadPool::hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int threads) { start(threads); }

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int threads) {
  if (threads == 0) threads = hardware_threads();
  if (threads < 1 || threads > kMaxThreads)
    throw std::invalid_argument("ThreadPool: threads=" + std::to_string(threads) +
                                " out of range [1, 1024] (0 = hardware cores)");
  stopping_ = false;
  share_ = std::make_unique<Share[]>(static_cast<size_t>(threads));
  for (int i = 0; i < threads - 1; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
}

void ThreadPool::resize(int threads) {
  if (threads == 0) threads = hardware_threads();
  if (threads < 1 || threads > kMaxThreads)
    throw std::invalid_argument("ThreadPool: threads=" + std::to_string(threads) +
                                " out of range [1, 1024] (0 = hardware cores)");
  std::lock_guard<std::mutex> job(submit_mutex_);
  stop();
  team_ = {};
  start(threads);
}

void ThreadPool::use_team(Team team) {
  if (!team.size || !team.run) throw std::invalid_argument("ThreadPool::use_team: size and run are required");
  std::lock_guard<std::mutex> job(submit_mutex_);
  stop();
  team_ = team;
  share_ = std::make_unique<Share[]>(kMaxThreads);  // the team's size may change
}

ThreadPool& ThreadPool::global() {
  static ThreadPool* pool = new ThreadPool(0);  // leaked on purpose
  return *pool;
}

void ThreadPool::run_tasks(int participant) {
  for (int k = 0; k < shares_; ++k) {
    Share& share = share_[static_cast<size_t>((participant + k) % shares_)];
    for (;;) {
      const int64_t i = share.next.fetch_add(1, std::memory_order_relaxed);
      if (i >= share.end) break;
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        for (int q = 0; q < shares_; ++q)  // skip the rest
          share_[static_cast<size_t>(q)].next.store(share_[static_cast<size_t>(q)].end, std::memory_order_relaxed);
      }
    }
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (!job_open_ || index >= participants_) continue;  // late or not invited
      ++running_;
    }
    t_inside_pool_task = true;
    run_tasks(index + 1);
    t_inside_pool_task = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--running_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::run_on_team(int threads) {
  team_.run(
      threads,
      [](void* self, int participant) {
        t_inside_pool_task = true;
        static_cast<ThreadPool*>(self)->run_tasks(participant);
        t_inside_pool_task = false;
      },
      this);
}

void ThreadPool::parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn,
                              int max_threads) {
  if (tasks <= 0) return;
  int threads = max_threads <= 0 ? this->threads() : std::min(max_threads, this->threads());
  threads = std::min<int64_t>({threads, tasks, kMaxThreads});
  if (threads <= 1 || t_inside_pool_task) {
    for (int64_t i = 0; i < tasks; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> job(submit_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    tasks_ = tasks;
    shares_ = threads;
    for (int p = 0; p < threads; ++p) {
      share_[static_cast<size_t>(p)].next.store(tasks * p / threads, std::memory_order_relaxed);
      share_[static_cast<size_t>(p)].end = tasks * (p + 1) / threads;
    }
    error_ = nullptr;
    if (!team_.run) {  // invite the pool's own workers
      participants_ = threads - 1;
      running_ = 0;
      job_open_ = true;
      ++generation_;
    }
  }
  if (team_.run) {
    run_on_team(threads);
    std::exception_ptr error = error_;
    error_ = nullptr;
    fn_ = nullptr;
    if (error) std::rethrow_exception(error);
    return;
  }
  work_cv_.notify_all();
  t_inside_pool_task = true;
  run_tasks(0);
  t_inside_pool_task = false;
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    job_open_ = false;  // every task is claimed: workers waking now skip the job
    done_cv_.wait(lock, [&] { return running_ == 0; });
    error = error_;
    error_ = nullptr;
    fn_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace tfmbs::fabric
