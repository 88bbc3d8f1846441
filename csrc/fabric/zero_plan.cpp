#include "fabric/zero_plan.h"

namespace tfmbs::fabric::fast_detail {
namespace {

using ZeroFn = void (*)(const ZeroCountJob&, int64_t, int64_t);

ZeroFn zero_kernel(Isa isa) {
  switch (isa) {
    case Isa::Amx:
    case Isa::Avx512: return zero_hits_avx512;
    case Isa::Avx2: return zero_hits_avx2;
    case Isa::Scalar: break;
  }
  return zero_hits_scalar;
}

}  // namespace

// Per slot: sum over the columns of rows x the slot's count there. Summed in
// 16-bit lanes (twice the lanes of 32 per vector), moved to 64 bits before
// they could wrap; a column zero in more than 257 batch rows goes straight
// to 64 bits.
std::vector<uint64_t> sum_slot_counts(const FastFrame& w, const std::vector<ZeroColumn>& columns) {
  const int64_t slots = w.slots();
  std::vector<uint64_t> total(static_cast<size_t>(slots), 0);
  std::vector<uint16_t> part(static_cast<size_t>(slots), 0);
  uint64_t room = UINT16_MAX;  // what part's lanes can still take
  auto flush = [&] {
    for (int64_t s = 0; s < slots; ++s) total[static_cast<size_t>(s)] += part[static_cast<size_t>(s)];
    std::fill(part.begin(), part.end(), uint16_t{0});
    room = UINT16_MAX;
  };
  for (const ZeroColumn& c : columns) {
    const uint8_t* counts = w.slot_column_nonzeros() + c.d * slots;
    const uint64_t most = 255 * c.rows;
    if (most > UINT16_MAX) {
      for (int64_t s = 0; s < slots; ++s) total[static_cast<size_t>(s)] += c.rows * counts[s];
      continue;
    }
    if (most > room) flush();
    room -= most;
    uint16_t* p = part.data();
    const auto z = static_cast<uint16_t>(c.rows);
    if (z == 1) {
      for (int64_t s = 0; s < slots; ++s) p[s] = static_cast<uint16_t>(p[s] + counts[s]);
    } else {
      for (int64_t s = 0; s < slots; ++s) p[s] = static_cast<uint16_t>(p[s] + z * counts[s]);
    }
  }
  flush();
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
