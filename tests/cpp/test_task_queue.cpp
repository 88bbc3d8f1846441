#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fabric/task_queue.h"

namespace tfmbs::fabric {
namespace {

TEST(TaskQueue, RunsInSubmissionOrder) {
  TaskQueue q("test");
  std::vector<int> order;  // written by the worker only
  std::vector<TaskId> ids;
  for (int i = 0; i < 200; ++i) ids.push_back(q.submit([&order, i] { order.push_back(i); }));
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], i + 1);
  q.wait_all();
  ASSERT_EQ(order.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[i], i);
  EXPECT_EQ(q.last_submitted(), 200u);
}

TEST(TaskQueue, WaitAndIsDone) {
  TaskQueue q;
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  const TaskId a = q.submit([open] { open.wait(); });
  const TaskId b = q.submit([] {});
  EXPECT_FALSE(q.is_done(a));
  EXPECT_FALSE(q.is_done(b));
  gate.set_value();
  q.wait(b);  // in order: a ran before b
  EXPECT_TRUE(q.is_done(a));
  EXPECT_TRUE(q.is_done(b));
  q.wait(a);  // already done: returns at once
}

TEST(TaskQueue, ErrorIsRethrownAtWaitAndDoesNotStopTheQueue) {
  TaskQueue q;
  std::atomic<int> ran{0};
  const TaskId a = q.submit([&] { ++ran; });
  const TaskId bad = q.submit([] { throw std::runtime_error("lane 3 exploded"); });
  const TaskId c = q.submit([&] { ++ran; });
  q.wait(c);
  q.wait(a);
  EXPECT_EQ(ran.load(), 2);
  try {
    q.wait(bad);
    FAIL() << "no rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "lane 3 exploded");
  }
  EXPECT_THROW(q.wait(bad), std::runtime_error);  // every time it is asked
  q.wait_all();  // already reported by wait(): nothing to rethrow
}

TEST(TaskQueue, UnwaitedErrorSurfacesAtWaitAll) {
  TaskQueue q;
  q.submit([] { throw std::out_of_range("first"); });
  q.submit([] { throw std::logic_error("second"); });
  q.submit([] {});
  EXPECT_THROW(q.wait_all(), std::out_of_range);
  EXPECT_THROW(q.wait_all(), std::logic_error);
  q.wait_all();  // both reported now
}

TEST(TaskQueue, UnknownIdsAreClearErrors) {
  TaskQueue q("tfmbs:0");
  q.submit([] {});
  try {
    q.wait(5);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "TaskQueue 'tfmbs:0': task id 5 was never submitted (ids so far: 1..1)");
  }
  EXPECT_THROW(q.is_done(0), std::invalid_argument);
  EXPECT_THROW(q.is_done(2), std::invalid_argument);
  EXPECT_THROW(q.submit(nullptr), std::invalid_argument);
}

TEST(TaskQueue, WaitingForALaterTaskFromInsideATaskIsALogicError) {
  TaskQueue q;
  std::promise<std::string> seen;
  std::promise<void> second_submitted;  // else task 1 may run before task 2 exists
  std::shared_future<void> gate = second_submitted.get_future().share();
  q.submit([&, gate] {
    gate.wait();
    try {
      q.wait(2);
      seen.set_value("no error");
    } catch (const std::logic_error& e) {
      seen.set_value(e.what());
    }
  });
  q.submit([] {});
  second_submitted.set_value();
  EXPECT_EQ(seen.get_future().get(), "TaskQueue 'fabric': task 1 waits for task 2, which runs after it");
  q.wait_all();
}

TEST(TaskQueue, ConcurrentSubmittersKeepPerThreadOrder) {
  TaskQueue q;
  constexpr int kThreads = 4, kPerThread = 500;
  std::mutex mu;
  std::vector<std::vector<int>> seen(kThreads);
  std::vector<std::vector<TaskId>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i)
        ids[t].push_back(q.submit([&, t, i] {
          std::lock_guard<std::mutex> lock(mu);
          seen[t].push_back(i);
        }));
    });
  for (auto& th : threads) th.join();
  q.wait_all();
  std::vector<TaskId> all;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[t].size(), size_t{kPerThread});
    for (int i = 0; i < kPerThread; ++i) EXPECT_EQ(seen[t][i], i);
    for (int i = 1; i < kPerThread; ++i) EXPECT_LT(ids[t][i - 1], ids[t][i]);
    all.insert(all.end(), ids[t].begin(), ids[t].end());
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], i + 1);  // unique, dense
}

TEST(TaskQueue, ConcurrentWaitersSeeTheirOwnTasks) {
  TaskQueue q;
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        const bool fail = (i + t) % 7 == 0;
        const TaskId id = q.submit([fail] {
          if (fail) throw std::runtime_error("x");
        });
        try {
          q.wait(id);
          if (fail) ++errors;  // should have thrown
        } catch (const std::runtime_error&) {
          if (!fail) ++errors;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  q.wait_all();
}

TEST(TaskQueue, DestructionDrainsPendingTasks) {
  std::atomic<int> ran{0};
  {
    TaskQueue q;
    for (int i = 0; i < 50; ++i)
      q.submit([&] {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        ++ran;
      });
  }
  EXPECT_EQ(ran.load(), 50);
}

TEST(TaskQueue, IdleWorkerSleeps) {
  // An idle queue's worker blocks on its condition variable: the process
  // uses (almost) no CPU time while it waits.
  TaskQueue q;
  q.submit([] {});
  q.wait_all();
  const std::clock_t before = std::clock();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const double cpu_ms = 1000.0 * static_cast<double>(std::clock() - before) / CLOCKS_PER_SEC;
  EXPECT_LT(cpu_ms, 50.0);
}

}  // namespace
}  // namespace tfmbs::fabric
