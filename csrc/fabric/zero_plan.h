// Internal: how the fast engine's zero-skip counters account for zero
// activations (fast_engine.cpp). Generic code with templates: include it
// from files built without ISA flags only (fast_engine_kernels.h says why);
// the per-row counting it runs is the kernels'.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/fast_engine_kernels.h"
#include "fabric/fast_frame.h"

namespace tfmbs::fabric::fast_detail {

// A column with zero activations, and in how many batch rows.
struct ZeroColumn {
  int64_t d;
  uint64_t rows;
};

template <typename IsZero>
std::vector<ZeroColumn> zero_columns(int64_t n, int64_t cols, IsZero is_zero) {
  std::vector<ZeroColumn> columns;
  if (n == 1) {  // a decode step: no per-column tally to fill and scan
    for (int64_t d = 0; d < cols; ++d)
      if (is_zero(0, d)) columns.push_back({d, 1});
    return columns;
  }
  std::vector<uint64_t> zeros(static_cast<size_t>(cols), 0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t d = 0; d < cols; ++d) zeros[static_cast<size_t>(d)] += is_zero(b, d);
  for (int64_t d = 0; d < cols; ++d)
    if (zeros[static_cast<size_t>(d)] != 0) columns.push_back({d, zeros[static_cast<size_t>(d)]});
  return columns;
}

// Per slot: sum over the columns of rows x the slot's count there. Summed in
// 16-bit lanes (twice the lanes of 32 per vector), moved to 64 bits before
// they could wrap; a column zero in more than 257 batch rows goes straight
// to 64 bits.
std::vector<uint64_t> sum_slot_counts(const FastFrame& w, const std::vector<ZeroColumn>& columns);

// How the zero-skip counts are corrected for zero activations (see
// fast_engine.h): sum_n #{d : w[r,d] != 0, x[n,d] == 0}, summed per lane
// class (the rows the counters add up; FastFrame).
//  * the frame keeps per-slot column counts: per zero column, a dot with its
//    slots' counts, on the caller - nothing per row;
//  * else, few zeros in the whole batch (<= K/128): for each zero, look up
//    the weight's code (position precomputed) - a handful of loads per row;
//  * otherwise: per column, how many batch rows are zero there (u8, in
//    chunks of <= 255 rows), dotted with |w| by a SIMD kernel - one vector
//    instruction per 64 columns per row, whatever the batch size.
class ZeroPlan {
 public:
  template <typename IsZero>
  ZeroPlan(const FastFrame& w, int64_t n, IsZero is_zero) : kp_(w.padded_cols()) {
    const int64_t cols = w.cols();
    if (w.slots() > 0) {
      const std::vector<ZeroColumn> columns = zero_columns(n, cols, is_zero);
      if (columns.empty()) return;
      const int64_t slots = w.slots(), classes = w.lane_classes();
      // The zero columns' counts are a few scattered lines of a table that
      // is often out of cache: all requested at once, not one miss at a time.
      for (const ZeroColumn& c : columns) {
        const uint8_t* counts = w.slot_column_nonzeros() + c.d * slots;
        for (int64_t at = 0; at < slots; at += 64) __builtin_prefetch(counts + at);
        __builtin_prefetch(counts + slots - 1);
      }
      const std::vector<uint64_t> slot_hits = sum_slot_counts(w, columns);
      class_hits_.assign(static_cast<size_t>(classes), 0);
      for (int64_t slot = 0; slot < slots; ++slot)
        class_hits_[static_cast<size_t>(slot % classes)] += slot_hits[static_cast<size_t>(slot)];
      return;
    }
    int64_t total = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t d = 0; d < cols; ++d) total += is_zero(b, d);
    if (total == 0) return;
    if (total * 128 <= cols) {
      for (int64_t b = 0; b < n; ++b)
        for (int64_t d = 0; d < cols; ++d)
          if (is_zero(b, d)) {
            offset_.push_back(static_cast<uint32_t>((d / kFastBlockCols) * kFastBlockBytes + d % 64));
            shift_.push_back(static_cast<uint8_t>(2 * ((d % kFastBlockCols) / 64)));
          }
      return;
    }
    // Chunk sums must fit the kernels' int32 lanes: rows * K < 2^31.
    const int64_t rows_per_chunk = std::clamp<int64_t>(INT32_MAX / std::max<int64_t>(cols, 1), 1, 255);
    chunks_ = (n + rows_per_chunk - 1) / rows_per_chunk;
    counts_.assign(static_cast<size_t>(chunks_ * kp_), 0);
    for (int64_t b = 0; b < n; ++b) {
      uint8_t* c = counts_.data() + (b / rows_per_chunk) * kp_;
      for (int64_t d = 0; d < cols; ++d) c[d] += is_zero(b, d);
    }
  }

  // Whether count() fills per-row hits.
  bool per_row() const { return chunks_ > 0 || !offset_.empty(); }
  // Per lane class (empty: per row, from count(), or no zeros).
  const std::vector<uint64_t>& class_hits() const { return class_hits_; }

  // Fills hits[r0..r1) when per_row(), from the frame's codes.
  void count(Isa isa, const FrameCodes& codes, int64_t r0, int64_t r1, uint64_t* hits) const;

 private:
  int64_t kp_;
  int64_t chunks_ = 0;
  std::vector<uint8_t> counts_;
  std::vector<uint32_t> offset_;
  std::vector<uint8_t> shift_;
  std::vector<uint64_t> class_hits_;
};

}  // namespace tfmbs::fabric::fast_detail
