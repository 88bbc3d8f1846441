#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fabric/fabric_pool.h"

using namespace tfmbs::fabric;

namespace {
constexpr size_t MiB = size_t{1} << 20;
}

TEST(FabricPool, ReservesNothingUntilFirstAllocation) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  EXPECT_FALSE(pool.reserved());
  EXPECT_EQ(pool.stats().reserved_bytes[kAll].current, 0);
  void* p = pool.allocate(100);
  EXPECT_TRUE(pool.reserved());
  pool.free(p);
}

TEST(FabricPool, ZeroBytesIsNull) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  EXPECT_EQ(pool.allocate(0), nullptr);
  pool.free(nullptr);  // ignored
  EXPECT_EQ(pool.stats().allocation[kAll].current, 0);
}

TEST(FabricPool, BlocksAreAlignedAndRounded) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  std::vector<void*> ptrs;
  for (size_t n : {1, 63, 64, 65, 1000, 4097}) {
    void* p = pool.allocate(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kBlockAlignment, 0u) << n;
    EXPECT_EQ(pool.block_size(p), (n + 63) / 64 * 64) << n;
    EXPECT_TRUE(pool.contains(p));
    ptrs.push_back(p);
  }
  auto st = pool.stats();
  EXPECT_EQ(st.requested_bytes[kAll].current, 1 + 63 + 64 + 65 + 1000 + 4097);
  EXPECT_EQ(st.allocated_bytes[kAll].current, 64 + 64 + 64 + 128 + 1024 + 4160);
  EXPECT_EQ(st.allocation[kSmallPool].current, 6);
  EXPECT_EQ(st.segment[kAll].current, 1);  // all in one 2 MiB small segment
  EXPECT_EQ(st.reserved_bytes[kAll].current, static_cast<int64_t>(kSegmentGranularity));
  for (void* p : ptrs) pool.free(p);
  st = pool.stats();
  EXPECT_EQ(st.allocated_bytes[kAll].current, 0);
  EXPECT_EQ(st.requested_bytes[kAll].current, 0);
  EXPECT_EQ(st.allocated_bytes[kAll].peak, 64 + 64 + 64 + 128 + 1024 + 4160);
}

TEST(FabricPool, MemoryIsWritableAndBlocksDoNotOverlap) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  std::vector<std::pair<uint8_t*, size_t>> blocks;
  for (int i = 0; i < 50; ++i) {
    size_t n = 100 + 997 * i;
    auto* p = static_cast<uint8_t*>(pool.allocate(n));
    std::memset(p, i, n);
    blocks.emplace_back(p, n);
  }
  for (int i = 0; i < 50; ++i) {
    auto [p, n] = blocks[i];
    for (size_t j = 0; j < n; ++j) ASSERT_EQ(p[j], i);
    pool.free(p);
  }
}

TEST(FabricPool, FreedNeighboursCoalesce) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  void* a = pool.allocate(1024);
  void* b = pool.allocate(1024);
  void* c = pool.allocate(1024);
  void* guard = pool.allocate(1024);
  EXPECT_EQ(static_cast<uint8_t*>(b), static_cast<uint8_t*>(a) + 1024);
  pool.free(a);
  pool.free(c);
  // a and c are separate holes, plus the tail of the segment.
  EXPECT_EQ(pool.stats().inactive_split[kAll].current, 3);
  pool.free(b);  // merges a, b, c into one hole
  auto st = pool.stats();
  EXPECT_EQ(st.inactive_split[kAll].current, 2);
  EXPECT_EQ(st.inactive_split_bytes[kAll].current,
            static_cast<int64_t>(kSegmentGranularity) - 1024);
  // The merged hole serves a request as large as all three.
  void* big = pool.allocate(3 * 1024);
  EXPECT_EQ(big, a);
  pool.free(big);
  pool.free(guard);
  st = pool.stats();
  EXPECT_EQ(st.inactive_split[kAll].current, 0);  // one whole free segment
  EXPECT_EQ(st.segment[kAll].current, 1);          // still cached
}

TEST(FabricPool, BestFitPicksTheSmallestHole) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  void* h8k = pool.allocate(8192);
  void* sep1 = pool.allocate(64);
  void* h4k = pool.allocate(4096);
  void* sep2 = pool.allocate(64);
  pool.free(h8k);
  pool.free(h4k);
  EXPECT_EQ(pool.allocate(4000), h4k);
  EXPECT_EQ(pool.allocate(5000), h8k);
  pool.free(sep1);
  pool.free(sep2);
}

TEST(FabricPool, LargeRequestsGetTheirOwnRoundedSegment) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  void* p = pool.allocate(3 * MiB + 1);
  auto st = pool.stats();
  EXPECT_EQ(st.segment[kLargePool].current, 1);
  EXPECT_EQ(st.reserved_bytes[kLargePool].current, static_cast<int64_t>(4 * MiB));
  EXPECT_EQ(st.allocation[kLargePool].current, 1);
  EXPECT_EQ(st.allocation[kSmallPool].current, 0);
  pool.free(p);
  EXPECT_EQ(pool.release_cache(), 4 * MiB);
  st = pool.stats();
  EXPECT_EQ(st.reserved_bytes[kAll].current, 0);
  EXPECT_EQ(st.num_device_alloc, 1);
  EXPECT_EQ(st.num_device_free, 1);
}

TEST(FabricPool, CachedBlocksAreReused) {
  FabricPool pool("tfmbs:test", 64 * MiB);
  void* p = pool.allocate(5 * MiB);
  pool.free(p);
  void* q = pool.allocate(5 * MiB);
  EXPECT_EQ(p, q);
  EXPECT_EQ(pool.stats().num_device_alloc, 1);
  pool.free(q);
}

TEST(FabricPool, ExhaustionThrowsAndKeepsExistingData) {
  FabricPool pool("tfmbs:7", 8 * MiB);
  auto* keep = static_cast<uint8_t*>(pool.allocate(3 * MiB));
  std::memset(keep, 0x5a, 3 * MiB);
  try {
    pool.allocate(6 * MiB);
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("tfmbs:7"), std::string::npos) << msg;
    EXPECT_NE(msg.find("6.00 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("capacity 8.00 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("4.00 MiB allocated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("0 B cached"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("fragmentation"), std::string::npos) << msg;  // 4 MiB free < 6 MiB
    EXPECT_EQ(e.requested, 6 * MiB);
  }
  auto st = pool.stats();
  EXPECT_EQ(st.num_ooms, 1);
  EXPECT_EQ(st.num_alloc_retries, 1);
  for (size_t i = 0; i < 3 * MiB; ++i) ASSERT_EQ(keep[i], 0x5a);
  pool.free(keep);
  void* again = pool.allocate(6 * MiB);  // works again after the free
  EXPECT_NE(again, nullptr);
  pool.free(again);
  EXPECT_THROW(pool.allocate(9 * MiB), OutOfMemory);  // above capacity
}

TEST(FabricPool, OutOfMemoryForFragmentationSaysSo) {
  FabricPool pool("tfmbs:0", 8 * MiB);
  void* blocks[4];
  for (auto& b : blocks) b = pool.allocate(2 * MiB);  // four 2 MiB segments fill the pool
  pool.free(blocks[0]);
  pool.free(blocks[2]);  // 4 MiB free, in two pieces
  try {
    pool.allocate(4 * MiB);
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("4.00 MiB allocated, 0 B cached"), std::string::npos) << msg;
    EXPECT_NE(msg.find("4.00 MiB free, but not in one piece"), std::string::npos) << msg;
  }
  pool.free(blocks[1]);
  pool.free(blocks[3]);
}

TEST(FabricPool, RetryReleasesTheCacheBeforeFailing) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  void* small = pool.allocate(1000);  // a small segment, 2 MiB
  void* big = pool.allocate(4 * MiB);
  pool.free(big);  // 4 MiB cached in the large pool
  pool.free(small);  // 2 MiB cached in the small pool
  // 8 MiB needs both cached segments given back first.
  void* all = pool.allocate(8 * MiB);
  EXPECT_NE(all, nullptr);
  EXPECT_EQ(pool.stats().num_alloc_retries, 1);
  EXPECT_EQ(pool.stats().num_ooms, 0);
  pool.free(all);
}

TEST(FabricPool, PressureCallbackCanFreeBlocks) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  void* evictable = pool.allocate(6 * MiB, MemoryKind::Resident);
  EXPECT_EQ(pool.stats().bytes_by_kind[1].current, static_cast<int64_t>(6 * MiB));
  std::vector<size_t> needs;
  pool.add_pressure_callback([&](size_t needed) -> size_t {
    needs.push_back(needed);
    if (!evictable) return 0;
    pool.free(evictable);
    evictable = nullptr;
    return 6 * MiB;
  });
  void* p = pool.allocate(4 * MiB);
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(needs, std::vector<size_t>{4 * MiB});
  EXPECT_EQ(pool.stats().bytes_by_kind[1].current, 0);
  EXPECT_THROW(pool.allocate(6 * MiB), OutOfMemory);  // nothing left to evict
  EXPECT_EQ(needs, (std::vector<size_t>{4 * MiB, 6 * MiB}));
  pool.free(p);
}

TEST(FabricPool, PressureCallbacksAreAskedInOrderUntilEnoughIsFreed) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  void* first = pool.allocate(2 * MiB, MemoryKind::Resident);
  void* second = pool.allocate(2 * MiB, MemoryKind::Resident);
  void* third = pool.allocate(2 * MiB, MemoryKind::Resident);
  void* fourth = pool.allocate(2 * MiB);  // the pool is full
  std::vector<std::string> asked;
  auto evictor = [&](const char* name, void*& block) {
    return [&, name](size_t) -> size_t {
      asked.push_back(name);
      if (!block) return 0;
      pool.free(block);
      block = nullptr;
      return 2 * MiB;
    };
  };
  const auto a = pool.add_pressure_callback(evictor("a", first));
  const auto b = pool.add_pressure_callback(evictor("b", second));
  const auto c = pool.add_pressure_callback(evictor("c", third));
  void* p = pool.allocate(2 * MiB);  // a's block is enough: b and c are not asked
  EXPECT_EQ(asked, (std::vector<std::string>{"a"}));
  pool.remove_pressure_callback(b);  // b is never asked again
  void* q = pool.allocate(2 * MiB);  // a has nothing left; b is gone; c frees
  EXPECT_EQ(asked, (std::vector<std::string>{"a", "a", "c"}));
  EXPECT_NE(second, nullptr);
  pool.remove_pressure_callback(a);
  pool.remove_pressure_callback(c);
  for (void* block : {p, q, second, fourth}) pool.free(block);
}

TEST(FabricPool, ForeignPointerIsRejected) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  int local = 0;
  EXPECT_THROW(pool.free(&local), std::invalid_argument);
  void* p = pool.allocate(128);
  EXPECT_THROW(pool.free(static_cast<uint8_t*>(p) + 64), std::invalid_argument);
  pool.free(p);
  EXPECT_THROW(pool.free(p), std::invalid_argument);  // double free
}

TEST(FabricPool, ResetPeakAndAccumulated) {
  FabricPool pool("tfmbs:test", 8 * MiB);
  void* a = pool.allocate(4096);
  void* b = pool.allocate(4096);
  pool.free(b);
  auto st = pool.stats();
  EXPECT_EQ(st.allocated_bytes[kAll].peak, 8192);
  EXPECT_EQ(st.allocated_bytes[kAll].allocated, 8192);
  EXPECT_EQ(st.allocated_bytes[kAll].freed, 4096);
  pool.reset_peak_stats();
  pool.reset_accumulated_stats();
  st = pool.stats();
  EXPECT_EQ(st.allocated_bytes[kAll].peak, 4096);
  EXPECT_EQ(st.allocated_bytes[kAll].allocated, 0);
  EXPECT_EQ(st.allocated_bytes[kAll].freed, 0);
  EXPECT_EQ(st.allocated_bytes[kAll].current, 4096);
  pool.free(a);
}

TEST(FabricPool, ConcurrentAllocateAndFree) {
  FabricPool pool("tfmbs:test", 1024 * MiB);
  std::atomic<bool> bad{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<std::pair<uint8_t*, size_t>> mine;
      for (int i = 0; i < 3000; ++i) {
        if (mine.size() < 20 && (rng() % 3 != 0 || mine.empty())) {
          size_t n = 1 + rng() % (rng() % 10 == 0 ? 3 * MiB : 8192);
          auto* p = static_cast<uint8_t*>(pool.allocate(n));
          std::memset(p, t + 1, n);
          mine.emplace_back(p, n);
        } else {
          size_t k = rng() % mine.size();
          auto [p, n] = mine[k];
          for (size_t j = 0; j < n; j += 61) bad = bad || p[j] != t + 1;
          pool.free(p);
          mine.erase(mine.begin() + static_cast<long>(k));
        }
      }
      for (auto [p, n] : mine) pool.free(p);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(bad);
  auto st = pool.stats();
  EXPECT_EQ(st.allocation[kAll].current, 0);
  EXPECT_EQ(st.allocated_bytes[kAll].current, 0);
  EXPECT_EQ(st.inactive_split[kAll].current, 0);  // everything coalesced
  pool.release_cache();
  EXPECT_EQ(pool.stats().reserved_bytes[kAll].current, 0);
}
