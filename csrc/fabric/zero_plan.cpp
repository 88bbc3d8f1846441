#include "fabric/zero_plan.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "fabric/isa_kernel.h"

namespace tfmbs::fabric::fast_detail {
namespace {

using ZeroFn = void (*)(const ZeroCountJob&, int64_t, int64_t);

using SlotFn = void (*)(const uint8_t*, int64_t, const ZeroColumn*, int64_t, uint16_t*);

SlotFn slot_kernel(Isa isa) {
  return isa_kernel<SlotFn>(isa, add_slot_counts_scalar, add_slot_counts_avx2, add_slot_counts_avx512);
}

ZeroFn zero_kernel(Isa isa) {
  return isa_kernel<ZeroFn>(isa, zero_hits_scalar, zero_hits_avx2, zero_hits_avx512);
}

}  // namespace

int64_t zero_count_rows(int64_t cols) { return std::clamp<int64_t>(INT32_MAX / std::max<int64_t>(cols, 1), 1, 255); }

std::vector<ZeroColumn> zero_columns(const ZeroCounts& zeros, int64_t cols) {
  std::vector<ZeroColumn> columns;
  // 8 columns at a time: zeros are few, and stride is a multiple of 8.
  for (int64_t d0 = 0; d0 < cols; d0 += 8) {
    uint64_t any = 0;
    for (int64_t c = 0; c < zeros.chunks; ++c) {
      uint64_t word;
      std::memcpy(&word, zeros.counts + c * zeros.stride + d0, sizeof word);
      any |= word;
    }
    if (any == 0) continue;
    for (int64_t d = d0; d < std::min(d0 + 8, cols); ++d) {
      uint64_t rows = 0;
      for (int64_t c = 0; c < zeros.chunks; ++c) rows += zeros.counts[c * zeros.stride + d];
      if (rows != 0) columns.push_back({d, rows});
    }
  }
  return columns;
}

ZeroPlan::ZeroPlan(Isa isa, const FastFrame& w, const ZeroCounts& zeros) : kp_(w.padded_cols()) {
  const std::vector<ZeroColumn> columns = zero_columns(zeros, w.cols());
  if (columns.empty()) return;
  if (w.slots() > 0) {
    const int64_t slots = w.slots(), classes = w.lane_classes();
    const std::vector<uint64_t> slot_hits = sum_slot_counts(isa, w, columns);
    class_hits_.assign(static_cast<size_t>(classes), 0);
    for (int64_t slot = 0; slot < slots; ++slot)
      class_hits_[static_cast<size_t>(slot % classes)] += slot_hits[static_cast<size_t>(slot)];
    return;
  }
  uint64_t total = 0;
  for (const ZeroColumn& c : columns) total += c.rows;
  if (total * 128 <= static_cast<uint64_t>(w.cols())) {
    for (const ZeroColumn& c : columns)
      for (uint64_t i = 0; i < c.rows; ++i) {
        offset_.push_back(static_cast<uint32_t>((c.d / kFastBlockCols) * kFastBlockBytes + c.d % 64));
        shift_.push_back(static_cast<uint8_t>(2 * ((c.d % kFastBlockCols) / 64)));
      }
    return;
  }
  chunks_ = zeros.chunks;
  counts_.assign(zeros.counts, zeros.counts + zeros.chunks * zeros.stride);
}

// Per slot: sum over the columns of rows x the slot's count there. Summed in
// 16-bit lanes by the isa's add_slot_counts, moved to 64 bits before they
// could wrap; a column zero in more than 257 batch rows goes straight to 64
// bits.
std::vector<uint64_t> sum_slot_counts(Isa isa, const FastFrame& w, const std::vector<ZeroColumn>& columns) {
  const SlotFn add = slot_kernel(isa);
  const int64_t slots = w.slots();
  const uint8_t* table = w.slot_column_nonzeros();
  std::vector<uint64_t> total(static_cast<size_t>(slots), 0);
  std::vector<uint16_t> part(static_cast<size_t>(slots), 0);
  size_t run = 0;              // the first column not yet in part
  uint64_t room = UINT16_MAX;  // what part's lanes can still take
  auto add_run = [&](size_t end) {
    if (end > run) add(table, slots, columns.data() + run, static_cast<int64_t>(end - run), part.data());
    run = end;
  };
  auto flush = [&](size_t end) {
    add_run(end);
    for (int64_t s = 0; s < slots; ++s) total[static_cast<size_t>(s)] += part[static_cast<size_t>(s)];
    std::fill(part.begin(), part.end(), uint16_t{0});
    room = UINT16_MAX;
  };
  for (size_t i = 0; i < columns.size(); ++i) {
    const ZeroColumn& c = columns[i];
    const uint64_t most = 255 * c.rows;
    if (most > UINT16_MAX) {
      add_run(i);
      run = i + 1;
      const uint8_t* counts = table + c.d * slots;
      for (int64_t s = 0; s < slots; ++s) total[static_cast<size_t>(s)] += c.rows * counts[s];
      continue;
    }
    if (most > room) flush(i);
    room -= most;
  }
  flush(columns.size());
  return total;
}

void ZeroPlan::count(Isa isa, const FrameCodes& codes, int64_t r0, int64_t r1, uint64_t* hits) const {
  if (chunks_ > 0) {
    ZeroCountJob job;
    static_cast<FrameCodes&>(job) = codes;
    job.zero_counts = counts_.data();
    job.stride = kp_;
    job.chunks = chunks_;
    job.zero_hits = hits;
    zero_kernel(isa)(job, r0, r1);
  } else if (!offset_.empty()) {
    const size_t nz = offset_.size();
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = codes.codes + static_cast<size_t>(r) * codes.row_bytes;
      uint64_t h = 0;
      for (size_t i = 0; i < nz; ++i) h += ((row[offset_[i]] >> shift_[i]) & 3) != 1;
      hits[r] = h;
    }
  }
}

}  // namespace tfmbs::fabric::fast_detail
