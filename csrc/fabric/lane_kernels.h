// The lanes' arithmetic over one weight row and one activation row, for a
// host kernel that computes what the fabric computes (the CPU kernel of the
// ternary linear layer). The reference engine defines these results; the
// tests hold both to each other.
//   int8  the int32 accumulator: sum of w[d] * x[d], wrapping.
//   fp32  16 banks: step d adds +-x[d] to bank d % 16 unless w[d] == 0 or
//         x[d] == 0 (a skip); then the fixed tree bank[j] += bank[j + s]
//         for s = 8, 4, 2, 1.
#pragma once

#include <cstdint>

#include "fabric/cpu_features.h"

namespace tfmbs::fabric {

int32_t lane_dot_int8(const int8_t* w, const int8_t* x, int64_t k);
float lane_dot_fp32(const int8_t* w, const float* x, int64_t k);

namespace lane_detail {
// The 16 banks after k steps (before the tree), per level (Scalar or Avx2;
// the caller checks cpu_supports first).
void fp32_banks(Isa isa, const int8_t* w, const float* x, int64_t k, float* bank);
void fp32_banks_scalar(const int8_t* w, const float* x, int64_t k, float* bank);
void fp32_banks_avx2(const int8_t* w, const float* x, int64_t k, float* bank);
}  // namespace lane_detail

}  // namespace tfmbs::fabric
