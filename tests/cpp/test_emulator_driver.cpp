// The emulator behind the driver seam: TFDs submitted through the queue run
// on the reference or the fast engine with the same results and counters;
// results are checked against direct computations here, and every submit-
// time rule and run-time error is exercised.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "fabric/emulator_driver.h"
#include "fabric/fabric_pool.h"
#include "fabric/pt5_codec.h"
#include "fabric/t2b_codec.h"

namespace tfmbs::fabric {
namespace {

using Engine = EmulatorDriver::Engine;

FabricConfig config_with(uint32_t tiles) {
  FabricConfig c;
  c.tiles = tiles;
  c.pool_bytes = 64 << 20;
  c.threads = 2;
  return c;
}

Tfd tgemm_tfd(uint64_t base, int64_t rows, int64_t cols) {
  Tfd t;
  t.base_addr = base;
  t.frame_len = static_cast<uint32_t>(rows * cols);
  t.flags = kFlagRead | kFlagPinned;
  t.exec_hints = static_cast<uint32_t>(Kernel::Tgemm) | kHintZeroSkipEn;
  return t;
}

Status status_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const FabricError& e) {
    return e.status();
  }
  return Status::Ok;
}

class EmulatorDriverTest : public ::testing::TestWithParam<Engine> {
 protected:
  FabricPool pool{"tfmbs:test", 64 << 20};
};

// telemetry.h's hand-checkable example: 1 tile, K=3, x=[5,0,-2],
// W rows [1,0,-1], [0,1,1] -> y=[7,-2]; cycles 3 + ceil(3/8)=1 burst = 4;
// lane 0: 3 active, 1 skip; lane 1: 3 active, 2 skips; utilization 3.
TEST_P(EmulatorDriverTest, HandComputedTgemm) {
  EmulatorDriver d(config_with(1), pool, GetParam());
  const int8_t w[6] = {1, 0, -1, 0, 1, 1};
  const int8_t x[3] = {5, 0, -2};
  int32_t y[2] = {};
  const uint64_t base = d.load_weights(w, 2, 3, kFlagRead | kFlagPinned);
  EXPECT_TRUE(pool.contains(pool.base() + base));
  EXPECT_EQ(d.frame_flags(base), kFlagRead | kFlagPinned);
  KernelArgs args;
  args.x = x;
  args.batch = 1;
  args.y = y;
  const TaskId id = d.submit(tgemm_tfd(base, 2, 3), args);
  d.wait(id);
  EXPECT_TRUE(d.is_done(id));
  EXPECT_EQ(y[0], 7);
  EXPECT_EQ(y[1], -2);
  const OpCounters c = d.read_counters().last_op;
  EXPECT_EQ(c.cycles, 4u);
  EXPECT_EQ(c.burst_wait_cycles, 1u);
  EXPECT_EQ(c.utilization, 3u);
  ASSERT_EQ(c.tiles.size(), 1u);
  EXPECT_EQ(c.tiles[0].active_cycles[0], 3u);
  EXPECT_EQ(c.tiles[0].skips[0], 1u);
  EXPECT_EQ(c.tiles[0].active_cycles[1], 3u);
  EXPECT_EQ(c.tiles[0].skips[1], 2u);
  EXPECT_EQ(c.tiles[0].active_cycles[2], 0u);
}

TEST_P(EmulatorDriverTest, ElementwiseKernelsInBothPackings) {
  EmulatorDriver d(config_with(4), pool, GetParam());
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> trit(-1, 1);
  const size_t n = 137;
  std::vector<int8_t> a(n), b(n);
  for (auto& v : a) v = static_cast<int8_t>(trit(rng));
  for (auto& v : b) v = static_cast<int8_t>(trit(rng));
  int64_t want_dot = 0;
  std::vector<int8_t> want_add(n), want_mul(n);
  for (size_t i = 0; i < n; ++i) {
    want_dot += a[i] * b[i];
    want_add[i] = static_cast<int8_t>(std::clamp(a[i] + b[i], -1, 1));
    want_mul[i] = static_cast<int8_t>(a[i] * b[i]);
  }
  for (Packing packing : {Packing::Pt5, Packing::T2B}) {
    const bool pt5 = packing == Packing::Pt5;
    const size_t bytes = pt5 ? pt5::packed_size(n) : t2b::packed_size(n);
    std::vector<uint8_t> pa(bytes), pb(bytes);
    (pt5 ? pt5::encode : t2b::encode)(a.data(), n, pa.data());
    (pt5 ? pt5::encode : t2b::encode)(b.data(), n, pb.data());
    Tfd t;
    t.base_addr = d.load_frame(pa.data(), bytes, kFlagRead);
    t.frame_len = n;
    t.packing_fmt = static_cast<uint16_t>(packing);
    t.flags = kFlagRead;
    KernelArgs args;
    args.b_addr = d.load_frame(pb.data(), bytes, kFlagRead);

    int64_t dot = 0;
    args.out = &dot;
    t.exec_hints = static_cast<uint32_t>(Kernel::Dot);
    d.wait(d.submit(t, args));
    EXPECT_EQ(dot, want_dot);

    for (Kernel k : {Kernel::Add, Kernel::Mul}) {
      std::vector<uint8_t> out(bytes);
      args.out = out.data();
      t.exec_hints = static_cast<uint32_t>(k);
      d.wait(d.submit(t, args));
      std::vector<int8_t> got(n);
      (pt5 ? pt5::decode : t2b::decode)(out.data(), n, got.data());
      EXPECT_EQ(got, k == Kernel::Add ? want_add : want_mul) << kernel_name(k) << " packing " << int(pt5);
    }
  }
}

TEST_P(EmulatorDriverTest, QueueRunsInOrderAndAccumulatesCounters) {
  EmulatorDriver d(config_with(2), pool, GetParam());
  const int64_t rows = 31, cols = 17;
  std::vector<int8_t> w(rows * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(static_cast<int>(i % 3) - 1);
  const uint64_t base = d.load_weights(w.data(), rows, cols, kFlagRead);
  std::vector<int8_t> x(cols, 1);
  std::vector<std::vector<int32_t>> ys(5, std::vector<int32_t>(rows));
  std::vector<TaskId> ids;
  for (auto& y : ys) {
    KernelArgs args;
    args.x = x.data();
    args.batch = 1;
    args.y = y.data();
    ids.push_back(d.submit(tgemm_tfd(base, rows, cols), args));
  }
  d.wait_all();
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_EQ(ids[i], ids[i - 1] + 1);
  const TelemetrySnapshot s = d.read_counters();
  EXPECT_EQ(s.accumulated.cycles, 5 * s.last_op.cycles);
  EXPECT_EQ(s.accumulated.utilization, 5 * s.last_op.utilization);
  for (int64_t r = 0; r < rows; ++r) {
    int32_t want = 0;
    for (int64_t c = 0; c < cols; ++c) want += w[r * cols + c];
    for (auto& y : ys) EXPECT_EQ(y[r], want);
  }
  d.reset_counters();
  EXPECT_EQ(d.read_counters().accumulated.cycles, 0u);
}

TEST_P(EmulatorDriverTest, SubmitRejectsBadDescriptors) {
  EmulatorDriver d(config_with(4), pool, GetParam());
  const int8_t w[4] = {1, 0, -1, 1};
  const uint64_t base = d.load_weights(w, 2, 2, kFlagRead);
  const uint8_t frame[4] = {121, 121, 121, 121};
  const uint64_t raw = d.load_frame(frame, 4, kFlagRead);
  const int8_t x[2] = {1, 1};
  int32_t y[2];
  KernelArgs args;
  args.x = x;
  args.batch = 1;
  args.y = y;
  auto submit = [&](Tfd t) { return status_of([&] { d.submit(t, args); }); };

  Tfd t = tgemm_tfd(base, 2, 2);
  EXPECT_EQ(submit(t), Status::Ok);
  t.base_addr = base + 8;  // aligned, inside the pool, but no frame starts there
  EXPECT_EQ(submit(t), Status::ErrAddr);
  t = tgemm_tfd(base + 4, 2, 2);  // misaligned: the validator
  EXPECT_EQ(submit(t), Status::ErrAddr);
  t = tgemm_tfd(pool.capacity(), 2, 2);  // outside the pool
  EXPECT_EQ(submit(t), Status::ErrAddr);
  t = tgemm_tfd(base, 2, 2);
  t.packing_fmt = 0x7;
  EXPECT_EQ(submit(t), Status::ErrPack);
  t.packing_fmt = static_cast<uint16_t>(Packing::T2B);  // weight frames are PT-5
  EXPECT_EQ(submit(t), Status::ErrPack);
  t = tgemm_tfd(base, 2, 2);
  t.frame_len = 5;
  EXPECT_EQ(submit(t), Status::ErrInvalid);
  t = tgemm_tfd(base, 2, 2);
  t.flags = kFlagPinned;  // no READ
  EXPECT_EQ(submit(t), Status::ErrInvalid);
  t = tgemm_tfd(base, 2, 2);
  t.tile_mask = 0x3;  // a subset of the 4 tiles
  EXPECT_EQ(submit(t), Status::ErrInvalid);
  t.tile_mask = 0xF;  // all of them: fine
  EXPECT_EQ(submit(t), Status::Ok);
  t = tgemm_tfd(base, 2, 2);
  t.exec_hints = static_cast<uint32_t>(Kernel::Conv2d);
  EXPECT_EQ(submit(t), Status::ErrInvalid);
  t = tgemm_tfd(raw, 2, 2);  // TGEMM on a raw frame
  EXPECT_EQ(submit(t), Status::ErrInvalid);
  t = tgemm_tfd(base, 2, 2);
  t.exec_hints = static_cast<uint32_t>(Kernel::Dot);  // DOT on a weight frame
  t.frame_len = 4;
  args.b_addr = raw;
  int64_t dot;
  args.out = &dot;
  EXPECT_EQ(submit(t), Status::ErrAddr);
  t.base_addr = raw;
  t.frame_len = 21;  // 5 bytes > the 4 loaded
  EXPECT_EQ(submit(t), Status::ErrAddr);
  t.frame_len = 20;
  EXPECT_EQ(submit(t), Status::Ok);
  t.exec_hints = static_cast<uint32_t>(Kernel::Nop);
  EXPECT_EQ(submit(t), Status::Ok);
  d.wait_all();
  EXPECT_EQ(dot, 0);  // all-zero frames

  d.unload(base);
  EXPECT_EQ(submit(tgemm_tfd(base, 2, 2)), Status::ErrAddr);
  EXPECT_EQ(status_of([&] { d.unload(base); }), Status::ErrAddr);
}

TEST_P(EmulatorDriverTest, RunTimeErrorSurfacesAtWait) {
  EmulatorDriver d(config_with(4), pool, GetParam());
  const int8_t w[4] = {1, 0, -1, 1};
  const uint64_t base = d.load_weights(w, 2, 2, kFlagRead);
  const int8_t bad_x[2] = {1, 2};  // not a trit
  const int8_t good_x[2] = {1, -1};
  int32_t y[2];
  KernelArgs args;
  args.activation = ActivationKind::Ternary;
  args.x = bad_x;
  args.batch = 1;
  args.y = y;
  const TaskId bad = d.submit(tgemm_tfd(base, 2, 2), args);
  args.x = good_x;
  const TaskId good = d.submit(tgemm_tfd(base, 2, 2), args);
  d.wait(good);
  EXPECT_EQ(y[0], 1);   // 1*1 + 0*(-1)
  EXPECT_EQ(y[1], -2);  // -1*1 + 1*(-1)
  EXPECT_EQ(status_of([&] { d.wait(bad); }), Status::ErrPack);
}

INSTANTIATE_TEST_SUITE_P(Engines, EmulatorDriverTest, ::testing::Values(Engine::Reference, Engine::Fast),
                         [](const auto& info) { return info.param == Engine::Reference ? "Reference" : "Fast"; });

// Both engines through the driver: identical results and counters on a
// random shape with int8, ternary and fp32 activations.
TEST(EmulatorDriver, EnginesAgreeThroughTheSeam) {
  FabricPool pool_a("a", 64 << 20), pool_b("b", 64 << 20);
  EmulatorDriver ref(config_with(4), pool_a, Engine::Reference), fast(config_with(4), pool_b, Engine::Fast);
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> trit(-1, 1), byte(-128, 127);
  const int64_t rows = 67, cols = 131, batch = 3;
  std::vector<int8_t> w(rows * cols), x8(batch * cols), xt(batch * cols);
  std::vector<float> xf(batch * cols);
  for (auto& v : w) v = static_cast<int8_t>(trit(rng));
  for (auto& v : x8) v = static_cast<int8_t>(byte(rng));
  for (auto& v : xt) v = static_cast<int8_t>(trit(rng));
  for (size_t i = 0; i < xf.size(); ++i) xf[i] = static_cast<float>(byte(rng)) / 16.0f;
  const uint64_t wa = ref.load_weights(w.data(), rows, cols, kFlagRead);
  const uint64_t wb = fast.load_weights(w.data(), rows, cols, kFlagRead);
  for (ActivationKind kind : {ActivationKind::Int8, ActivationKind::Ternary, ActivationKind::Fp32}) {
    std::vector<int32_t> ya(batch * rows), yb(batch * rows);  // fp32 results share the storage size
    KernelArgs args;
    args.activation = kind;
    args.x = kind == ActivationKind::Fp32 ? static_cast<const void*>(xf.data())
             : kind == ActivationKind::Int8 ? x8.data() : xt.data();
    args.batch = batch;
    args.y = ya.data();
    ref.wait(ref.submit(tgemm_tfd(wa, rows, cols), args));
    args.y = yb.data();
    fast.wait(fast.submit(tgemm_tfd(wb, rows, cols), args));
    EXPECT_EQ(ya, yb) << int(kind);  // bitwise, fp32 included
    const OpCounters ca = ref.read_counters().last_op, cb = fast.read_counters().last_op;
    EXPECT_EQ(ca, cb) << ca.first_difference(cb);
    if (kind == ActivationKind::Int8) {
      for (int64_t n = 0; n < batch; ++n)
        for (int64_t r = 0; r < rows; ++r) {
          int32_t want = 0;
          for (int64_t c = 0; c < cols; ++c) want += w[r * cols + c] * x8[n * cols + c];
          ASSERT_EQ(ya[n * rows + r], want);
        }
    }
  }
}

}  // namespace
}  // namespace tfmbs::fabric
