// The fast engine's portable kernels (any CPU): same layout and results as
// the SIMD ones, used where the CPU has neither AVX2 nor AVX-512.
#include "fabric/fast_engine_kernels.h"
#include "fabric/fast_frame.h"

namespace tfmbs::fabric::fast_detail {

void int8_rows_scalar(const Int8Job& j, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = j.codes + r * j.row_bytes;
    for (int64_t n = 0; n < j.n; ++n) {
      const int8_t* x = j.x + n * j.x_stride;
      uint32_t acc = 0;
      for (int64_t b = 0; b < j.blocks; ++b) {
        const uint8_t* blk = row + b * 64;
        for (int i = 0; i < 4; ++i) {
          const int64_t base = b * 256 + i * 64;
          for (int k = 0; k < 64; ++k) {
            const int code = (blk[k] >> (2 * i)) & 3;
            acc += static_cast<uint32_t>((code - 1) * x[base + k]);
          }
        }
      }
      j.y[n * j.m + r] = static_cast<int32_t>(acc);
    }
  }
}

void pt5_tables_scalar(const int8_t* x, int64_t pairs, int16_t* tables) {
  for (int64_t g = 0; g < 2 * pairs; ++g) {
    const int8_t* xg = x + 5 * g;
    int16_t* first3 = tables + (g / 2) * 128 + (g % 2) * 32;
    int16_t* last2 = first3 + 64;
    for (int e = 0; e < 32; ++e) {
      first3[e] = e < 27 ? static_cast<int16_t>(e % 3 * xg[0] + e / 3 % 3 * xg[1] + e / 9 * xg[2]) : 0;
      last2[e] = e < 9 ? static_cast<int16_t>(e % 3 * xg[3] + e / 3 * xg[4]) : 0;
    }
  }
}

void pt5_rows_scalar(const Pt5Job& j, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* block = j.blocks + (r / kPt5BlockRows) * j.block_bytes + 2 * (r % kPt5BlockRows);
    uint32_t acc = 0;
    for (int64_t g = 0; g < 2 * j.pairs; ++g) {
      const int b = block[(g / 2) * 64 + g % 2];
      const int16_t* first3 = j.tables + (g / 2) * 128 + (g % 2) * 32;
      acc += static_cast<uint32_t>(first3[b % 27] + first3[64 + b / 27]);
    }
    j.y[r] = static_cast<int32_t>(acc - static_cast<uint32_t>(j.x_sum));
  }
}

ActivationRow copy_activation_row_scalar(const int8_t* src, int64_t cols, int8_t* dst, uint8_t* counts) {
  uint32_t sum = 0;
  bool has_zero = false;
  for (int64_t d = 0; d < cols; ++d) {
    dst[d] = src[d];
    sum += static_cast<uint32_t>(src[d]);
    const bool zero = src[d] == 0;
    counts[d] = static_cast<uint8_t>(counts[d] + zero);
    has_zero |= zero;
  }
  return {static_cast<int32_t>(sum), has_zero};
}

void add_slot_counts_scalar(const uint8_t* table, int64_t slots, const ZeroColumn* columns, int64_t count,
                            uint16_t* part) {
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* counts = table + columns[i].d * slots;
    const auto rows = static_cast<uint16_t>(columns[i].rows);
    for (int64_t s = 0; s < slots; ++s) part[s] = static_cast<uint16_t>(part[s] + rows * counts[s]);
  }
}

void zero_hits_scalar(const ZeroCountJob& j, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = j.codes + r * j.row_bytes;
    uint64_t hits = 0;
    for (int64_t c = 0; c < j.chunks; ++c) {
      const uint8_t* zc = j.zero_counts + c * j.stride;
      for (int64_t b = 0; b < j.blocks; ++b)
        for (int i = 0; i < 4; ++i)
          for (int k = 0; k < 64; ++k)
            hits += (((row[b * 64 + k] >> (2 * i)) & 3) != 1) * zc[b * 256 + i * 64 + k];
    }
    j.zero_hits[r] = hits;
  }
}

void fp32_rows_scalar(const Fp32Job& j, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = j.codes + r * j.row_bytes;
    for (int64_t n = 0; n < j.n; ++n) {
      const float* x = j.x + n * j.x_stride;
      float bank[16] = {};
      for (int64_t b = 0; b < j.blocks; ++b) {
        const uint8_t* blk = row + b * 64;
        for (int i = 0; i < 4; ++i) {
          const int64_t base = b * 256 + i * 64;
          for (int k = 0; k < 64; ++k) {
            const int code = (blk[k] >> (2 * i)) & 3;
            const float xv = x[base + k];
            if (xv == 0.0f) continue;  // zero-skip
            if (code == 2) bank[k % 16] += xv;
            else if (code == 0) bank[k % 16] -= xv;
          }
        }
      }
      j.y[n * j.m + r] = reduce_fp_banks(bank);
    }
  }
}

}  // namespace tfmbs::fabric::fast_detail
