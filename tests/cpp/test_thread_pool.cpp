#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fabric/thread_pool.h"

namespace tfmbs::fabric {
namespace {

TEST(ThreadPool, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (int64_t tasks : {0, 1, 2, 7, 100}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
      pool.parallel_for(tasks, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
      for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    }
  }
}

TEST(ThreadPool, OneThreadRunsOnTheCaller) {
  ThreadPool pool(4);
  const auto me = std::this_thread::get_id();
  std::atomic<int> elsewhere{0};
  pool.parallel_for(50, [&](int64_t) { elsewhere += std::this_thread::get_id() != me; }, 1);
  EXPECT_EQ(elsewhere.load(), 0);
}

TEST(ThreadPool, UsesSeveralThreads) {
  ThreadPool pool(2);
  std::atomic<int> inside{0}, max_inside{0};
  pool.parallel_for(8, [&](int64_t) {
    const int now = ++inside;
    int m = max_inside.load();
    while (now > m && !max_inside.compare_exchange_weak(m, now)) {}
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    --inside;
  });
  EXPECT_EQ(max_inside.load(), 2);
}

TEST(ThreadPool, FirstExceptionIsRethrownAndPoolStaysUsable) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(20, [](int64_t i) { if (i == 5) throw std::runtime_error("task 5"); }),
               std::runtime_error);
  std::atomic<int> n{0};
  pool.parallel_for(10, [&](int64_t) { ++n; });
  EXPECT_EQ(n.load(), 10);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int> n{0};
  pool.parallel_for(4, [&](int64_t) { pool.parallel_for(3, [&](int64_t) { ++n; }); });
  EXPECT_EQ(n.load(), 12);
}

TEST(ThreadPool, ConcurrentCallers) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int k = 0; k < 50; ++k) pool.parallel_for(16, [&](int64_t i) { sum += i; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(sum.load(), 4 * 50 * (15 * 16 / 2));
}

TEST(ThreadPool, ResizeAndBadCounts) {
  ThreadPool pool(2);
  pool.resize(3);
  EXPECT_EQ(pool.threads(), 3);
  std::atomic<int> n{0};
  pool.parallel_for(9, [&](int64_t) { ++n; });
  EXPECT_EQ(n.load(), 9);
  EXPECT_THROW(ThreadPool(-1), std::invalid_argument);
  EXPECT_THROW(pool.resize(-3), std::invalid_argument);
  EXPECT_EQ(ThreadPool(0).threads(), ThreadPool::hardware_threads());
  EXPECT_GE(ThreadPool::global().threads(), 1);
}

// Idle workers must sleep: over 300 ms of idleness the process burns far
// less CPU time than one spinning worker would (300 ms).
TEST(ThreadPool, IdleWorkersDoNotSpin) {
  ThreadPool pool(4);
  pool.parallel_for(8, [](int64_t) {});
  const std::clock_t before = std::clock();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double cpu_ms = 1000.0 * static_cast<double>(std::clock() - before) / CLOCKS_PER_SEC;
  EXPECT_LT(cpu_ms, 60.0);
}

// A lent team: participant 0 on the caller, the others on fresh threads
// (records which threads served the job).
std::atomic<int> g_team_calls{0};
int four() { return 4; }
void thread_team(int n, void (*body)(void*, int), void* ctx) {
  ++g_team_calls;
  std::vector<std::thread> others;
  for (int p = 1; p < n; ++p) others.emplace_back([=] { body(ctx, p); });
  body(ctx, 0);
  for (auto& t : others) t.join();
}
// A team that can only run on the caller: every participant in turn.
int one() { return 1; }
void serial_team(int n, void (*body)(void*, int), void* ctx) {
  for (int p = 0; p < n; ++p) body(ctx, p);
}

TEST(ThreadPool, RunsJobsOnALentTeam) {
  ThreadPool pool(2);
  pool.use_team({&four, &thread_team});
  EXPECT_EQ(pool.threads(), 4);
  const int calls = g_team_calls.load();
  for (int64_t tasks : {2, 7, 100}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
    pool.parallel_for(tasks, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
  EXPECT_EQ(g_team_calls.load(), calls + 3);
  // Errors still reach the caller; nested calls still run inline.
  EXPECT_THROW(pool.parallel_for(8, [](int64_t i) { if (i == 5) throw std::runtime_error("task 5"); }),
               std::runtime_error);
  std::atomic<int> inner{0};
  pool.parallel_for(4, [&](int64_t) { pool.parallel_for(3, [&](int64_t) { ++inner; }); });
  EXPECT_EQ(inner.load(), 12);
  // resize() goes back to the pool's own workers.
  pool.resize(3);
  EXPECT_EQ(pool.threads(), 3);
  pool.parallel_for(9, [](int64_t) {});
  EXPECT_EQ(g_team_calls.load(), calls + 5);
}

TEST(ThreadPool, ATeamServingParticipantsInTurnStillRunsEveryTask) {
  ThreadPool pool(1);
  pool.use_team({&four, &serial_team});
  std::vector<std::atomic<int>> hits(50);
  pool.parallel_for(50, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  pool.use_team({&one, &serial_team});
  EXPECT_EQ(pool.threads(), 1);
  EXPECT_THROW(pool.use_team({}), std::invalid_argument);
}

}  // namespace
}  // namespace tfmbs::fabric
