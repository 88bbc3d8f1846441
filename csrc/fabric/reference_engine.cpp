#include "fabric/reference_engine.h"

#include <stdexcept>
#include <type_traits>
#include <string>
#include <vector>

#include "fabric/pt5_codec.h"
#include "fabric/status.h"

namespace tfmbs::fabric::reference {
namespace {

constexpr int kFpBanks = 16;

void check_batch(int64_t n) {
  if (n < 0) throw std::invalid_argument("tgemm: batch rows N=" + std::to_string(n) + " must be >= 0");
}

void check_ternary(const int8_t* x, int64_t count, const char* what) {
  for (int64_t i = 0; i < count; ++i) {
    if (x[i] < -1 || x[i] > 1) {
      throw FabricError(Status::ErrPack, std::string(what) + ": element " + std::to_string(i) +
                                             " is " + std::to_string(x[i]) +
                                             "; ternary values are -1, 0, 1");
    }
  }
}

// One lane's state for the integer kernels.
struct IntLane {
  LaneAccumulator acc;
  template <typename X>
  void mac(int w, X x) { acc.add(w > 0 ? static_cast<int64_t>(x) : -static_cast<int64_t>(x)); }
};

// One lane's state for fp32 activations: 16 banks, see the header.
struct FpLane {
  float bank[kFpBanks];
  void reset() { for (float& b : bank) b = 0.0f; }
  void mac(int w, float x, int64_t d) {
    float& b = bank[d % kFpBanks];
    if (w > 0) b += x; else b -= x;
  }
  float result() const {
    float b[kFpBanks];
    for (int j = 0; j < kFpBanks; ++j) b[j] = bank[j];
    for (int s = kFpBanks / 2; s >= 1; s /= 2)
      for (int j = 0; j < s; ++j) b[j] = b[j] + b[j + s];
    return b[0];
  }
};

template <typename X>
bool is_zero(X x) { return x == X(0); }

// The cycle-by-cycle TGEMM. X = int8_t or float; act_bytes = bytes of one
// activation row streamed into bank B (burst model).
template <typename X, typename Y>
OpCounters run_tgemm(const LaneMajorFrame& w, const X* x, int64_t n, Y* y, uint64_t act_bytes) {
  check_batch(n);
  const int tiles = w.tiles();
  const int64_t rows = w.rows(), cols = w.cols(), passes = w.passes();
  const int64_t group = int64_t{kLanesPerTile} * tiles;
  OpCounters c(tiles);
  const uint64_t burst = burst_cycles(act_bytes);
  std::vector<int8_t> lane_trits(static_cast<size_t>(tiles) * kLanesPerTile);
  std::vector<IntLane> ilanes(static_cast<size_t>(group));
  std::vector<FpLane> flanes(static_cast<size_t>(group));

  for (int64_t p = 0; p < passes; ++p) {
    for (int64_t b = 0; b < n; ++b) {
      // DMA: the activation row streams into bank B; every lane waits.
      c.burst_wait_cycles += burst;
      c.cycles += burst;
      for (auto& l : ilanes) l = IntLane{};
      for (auto& l : flanes) l.reset();
      const X* xrow = x + b * cols;
      for (int64_t d = 0; d < cols; ++d) {  // one fabric cycle per step
        ++c.cycles;
        ++c.compute_cycles;
        const X xv = xrow[d];  // broadcast to all lanes of all tiles
        for (int t = 0; t < tiles; ++t) {
          int8_t* lanes = lane_trits.data() + t * kLanesPerTile;
          pt5::decode(w.word(p, t, d), kLanesPerTile, lanes);  // bank A read
          for (int l = 0; l < kLanesPerTile; ++l) {
            const int64_t r = p * group + t * kLanesPerTile + l;
            if (r >= rows) continue;  // the lane has no row this pass
            ++c.tiles[t].active_cycles[l];
            const int wv = lanes[l];
            if (wv == 0 || is_zero(xv)) {
              ++c.tiles[t].skips[l];  // clock-gated
              continue;
            }
            ++c.utilization;
            const size_t g = static_cast<size_t>(t * kLanesPerTile + l);
            if constexpr (std::is_same_v<X, float>) {
              flanes[g].mac(wv, xv, d);
            } else {
              ilanes[g].mac(wv, xv);
            }
          }
        }
      }
      for (int t = 0; t < tiles; ++t) {
        for (int l = 0; l < kLanesPerTile; ++l) {
          const int64_t r = p * group + t * kLanesPerTile + l;
          if (r >= rows) continue;
          const size_t g = static_cast<size_t>(t * kLanesPerTile + l);
          if constexpr (std::is_same_v<X, float>) {
            y[b * rows + r] = flanes[g].result();
          } else {
            y[b * rows + r] = ilanes[g].acc.value();
            if (ilanes[g].acc.overflow) c.tiles[t].overflow = true;
          }
        }
      }
    }
  }
  return c;
}

void check_elementwise(int64_t n, int tiles) {
  if (n < 0 || n > INT32_MAX)
    throw std::invalid_argument("elementwise kernel: n=" + std::to_string(n) +
                                " out of range [0, 2147483647]");
  if (tiles < 1 || tiles > 255)
    throw std::invalid_argument("elementwise kernel: tiles=" + std::to_string(tiles) +
                                " out of range [1, 255]");
}

enum class Elementwise { Dot, Add, Mul };

// Element i on global lane i % G in step i / G, all lanes in lock-step.
OpCounters run_elementwise(Elementwise kind, const uint8_t* pa, const uint8_t* pb, int64_t n,
                           int tiles, int64_t* dot_out, uint8_t* out) {
  check_elementwise(n, tiles);
  std::vector<int8_t> a(static_cast<size_t>(n)), b(static_cast<size_t>(n)), o(static_cast<size_t>(n));
  pt5::decode(pa, static_cast<size_t>(n), a.data());
  pt5::decode(pb, static_cast<size_t>(n), b.data());
  const int64_t group = int64_t{kLanesPerTile} * tiles;
  OpCounters c(tiles);
  const uint64_t burst = burst_cycles(2 * pt5::packed_size(static_cast<size_t>(n)));
  c.burst_wait_cycles = burst;
  c.cycles = burst;
  std::vector<LaneAccumulator> acc(static_cast<size_t>(group));
  const int64_t steps = (n + group - 1) / group;
  for (int64_t s = 0; s < steps; ++s) {
    ++c.cycles;
    ++c.compute_cycles;
    for (int64_t g = 0; g < group; ++g) {
      const int64_t i = s * group + g;
      if (i >= n) continue;
      const int t = static_cast<int>(g / kLanesPerTile), l = static_cast<int>(g % kLanesPerTile);
      ++c.tiles[t].active_cycles[l];
      const int av = a[i], bv = b[i];
      if (av == 0 || bv == 0) {
        ++c.tiles[t].skips[l];
        // ADD passes the other operand through; MUL and DOT give 0.
        o[i] = static_cast<int8_t>(kind == Elementwise::Add ? av + bv : 0);
        continue;
      }
      ++c.utilization;
      const int prod = av == bv ? 1 : -1;  // sign-flip
      switch (kind) {
        case Elementwise::Dot: acc[g].add(prod); break;
        case Elementwise::Mul: o[i] = static_cast<int8_t>(prod); break;
        case Elementwise::Add: o[i] = static_cast<int8_t>(av == bv ? av : 0); break;  // saturate
      }
    }
  }
  if (kind == Elementwise::Dot) {
    int64_t sum = 0;
    for (int64_t g = 0; g < group; ++g) {
      sum += acc[g].value();
      if (acc[g].overflow) c.tiles[g / kLanesPerTile].overflow = true;
    }
    *dot_out = sum;
  } else {
    pt5::encode(o.data(), static_cast<size_t>(n), out);
  }
  return c;
}

}  // namespace

OpCounters tgemm_int8(const LaneMajorFrame& w, const int8_t* x, int64_t n, int32_t* y) {
  return run_tgemm(w, x, n, y, static_cast<uint64_t>(w.cols()));
}

OpCounters tgemm_ternary(const LaneMajorFrame& w, const int8_t* x, int64_t n, int32_t* y) {
  check_batch(n);
  check_ternary(x, n * w.cols(), "tgemm ternary activations");
  return run_tgemm(w, x, n, y, pt5::packed_size(static_cast<size_t>(w.cols())));
}

OpCounters tgemm_fp32(const LaneMajorFrame& w, const float* x, int64_t n, float* y) {
  return run_tgemm(w, x, n, y, 4 * static_cast<uint64_t>(w.cols()));
}

OpCounters dot(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, int64_t* result) {
  return run_elementwise(Elementwise::Dot, a, b, n, tiles, result, nullptr);
}

OpCounters add(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) {
  return run_elementwise(Elementwise::Add, a, b, n, tiles, nullptr, out);
}

OpCounters mul(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) {
  return run_elementwise(Elementwise::Mul, a, b, n, tiles, nullptr, out);
}

}  // namespace tfmbs::fabric::reference
