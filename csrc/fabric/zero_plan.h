// Internal: how the fast engine's zero-skip counters account for zero
// activations (fast_engine.cpp). Include it from files built without ISA
// flags only (fast_engine_kernels.h says why); the per-row counting it runs
// is the kernels'.
#pragma once

#include <cstdint>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/fast_engine_kernels.h"
#include "fabric/fast_frame.h"

namespace tfmbs::fabric::fast_detail {

// The batch rows a row of u8 zero counts covers for K columns: fewer than
// 256 (a count must not wrap), and few enough that rows * K < 2^31 (the
// zero-hit kernels sum a chunk in int32 lanes).
int64_t zero_count_rows(int64_t cols);

// Per column, how many batch rows have a zero activation there, in chunks
// of zero_count_rows(cols) batch rows: counts[c * stride + d], 0 past the
// last column. The engine fills them as it copies the activations in.
struct ZeroCounts {
  uint8_t* counts = nullptr;
  int64_t chunks = 0;
  int64_t stride = 0;
  // The counts row that batch row b adds to.
  uint8_t* for_row(int64_t b, int64_t cols) const { return counts + b / zero_count_rows(cols) * stride; }
};

// The columns of [0, cols) with a nonzero count, ascending.
std::vector<ZeroColumn> zero_columns(const ZeroCounts& zeros, int64_t cols);

// Per slot: sum over the columns of rows x the slot's count there. Summed in
// 16-bit lanes by the isa's add_slot_counts, moved to 64 bits before they
// could wrap; a column zero in more than 257 batch rows goes straight to 64
// bits.
std::vector<uint64_t> sum_slot_counts(Isa isa, const FastFrame& w, const std::vector<ZeroColumn>& columns);

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
  ZeroPlan() = default;  // no zero activations
  ZeroPlan(Isa isa, const FastFrame& w, const ZeroCounts& zeros);

  // Whether count() fills per-row hits.
  bool per_row() const { return chunks_ > 0 || !offset_.empty(); }
  // Per lane class (empty: per row, from count(), or no zeros).
  const std::vector<uint64_t>& class_hits() const { return class_hits_; }

  // Fills hits[r0..r1) when per_row(), from the frame's codes.
  void count(Isa isa, const FrameCodes& codes, int64_t r0, int64_t r1, uint64_t* hits) const;

 private:
  int64_t kp_ = 0;
  int64_t chunks_ = 0;
  std::vector<uint8_t> counts_;
  std::vector<uint32_t> offset_;
  std::vector<uint8_t> shift_;
  std::vector<uint64_t> class_hits_;
};

}  // namespace tfmbs::fabric::fast_detail
