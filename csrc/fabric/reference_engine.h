// The reference engine: the definition of correct. It executes the spec's
// lane-major frames cycle by cycle, tiles in lock-step, lane by lane, with
// zero-skip and sign-flip semantics and 32-bit wrapping accumulators, and
// counts every counter of the cycle model documented in telemetry.h. It is
// deliberately simple and slow (a few hundred million lane-cycles/s at best);
// the fast engine must agree with it bit for bit, counters included.
//
// Kernel semantics (the fabric's kernel ids 1 DOT, 2 ADD, 3 MUL, 6 TGEMM):
//   TGEMM  y[n, r] = sum_d W[r, d] * x[n, d], W in {-1,0,1}, on one lane per
//          output row r. One MAC = sign-flip: w=+1 adds x, w=-1 subtracts x;
//          a zero weight or zero activation is skipped (no accumulator
//          change). Activations:
//            int8    x in [-128, 127], y int32;
//            ternary x in {-1,0,1} (int8; anything else -> ErrPack), y int32
//                    (trit x trit: equal signs add 1, different subtract 1);
//            fp32    y fp32. An fp32 lane keeps 16 accumulator banks; step d
//                    adds to bank d % 16 (in increasing d), and the lane's
//                    result is the fixed tree: for s = 8,4,2,1: bank[j] +=
//                    bank[j+s] (j < s); result = bank[0]. x == 0.0 (either
//                    sign) is a skip. This order is what the SIMD fast engine
//                    computes too, so fp results are identical for every ISA
//                    and thread count. fp lanes never set overflow flags.
//          int accumulators are 32-bit two's complement: every MAC is a
//          wrapping add; an add whose exact value leaves [-2^31, 2^31-1]
//          sets the overflow flag of the lane's tile.
//   DOT    two frames a, b of n trits (PT-5): element i on global lane
//          i mod G (see telemetry.h); each lane accumulates a_i*b_i (32-bit,
//          wrapping, flagged); the frame controller sums the G lane
//          accumulators exactly (64-bit) into the result.
//   ADD    out_i = clamp(a_i + b_i, -1, 1) (saturating ternary add).
//   MUL    out_i = a_i * b_i (sign-flip).
//          ADD/MUL results are trits, so they cannot overflow. For all three
//          a zero operand is a skip (the lane's zero-skip gate looks at both
//          operands whatever the kernel), anything else one MAC.
#pragma once

#include <cstdint>

#include "fabric/lane_major_frame.h"
#include "fabric/telemetry.h"

namespace tfmbs::fabric {

// A lane's 32-bit wrapping accumulator with its overflow detection.
struct LaneAccumulator {
  uint32_t bits = 0;  // two's complement value; unsigned so wrapping is defined
  bool overflow = false;
  void add(int64_t v) {
    const int64_t exact = static_cast<int64_t>(value()) + v;
    if (exact < INT32_MIN || exact > INT32_MAX) overflow = true;
    bits += static_cast<uint32_t>(v);
  }
  int32_t value() const { return static_cast<int32_t>(bits); }
};

namespace reference {

// y[n*M + r] for n < N, r < M (M = w.rows(), K = w.cols(); x is [N, K]
// row-major). Returns the op's counters. N >= 0 (else invalid_argument).
OpCounters tgemm_int8(const LaneMajorFrame& w, const int8_t* x, int64_t n, int32_t* y);
OpCounters tgemm_ternary(const LaneMajorFrame& w, const int8_t* x, int64_t n, int32_t* y);
OpCounters tgemm_fp32(const LaneMajorFrame& w, const float* x, int64_t n, float* y);

// a, b: PT-5 frames of n trits (pt5::packed_size(n) bytes each); an invalid
// byte throws FabricError(ErrPack). 0 <= n <= 2^31-1. tiles in [1, 255].
OpCounters dot(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, int64_t* result);
// out: pt5::packed_size(n) bytes.
OpCounters add(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out);
OpCounters mul(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out);

}  // namespace reference
}  // namespace tfmbs::fabric
