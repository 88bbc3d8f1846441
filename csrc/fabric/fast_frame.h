// The fast engine's resident weight layout, converted once when a frame is
// loaded (never per call). Chosen for x86 SIMD, after llama.cpp's TQ2_0:
//
//  * Each weight w in {-1,0,1} is stored as the 2-bit code c = w + 1 in
//    {0,1,2} (3 never occurs). Then sum_d w_d*x_d = sum_d c_d*x_d - sum_d x_d,
//    so one u8 x s8 dot product instruction (AVX-512 VNNI vpdpbusd, AVX2
//    vpmaddubsw) does the work and sum(x) is subtracted once per activation
//    row, not per weight row. |w| = (~c) & 1 gives the nonzero indicator the
//    analytic zero-skip counters need.
//  * The row is padded with zero weights (code 1) to Kp = a multiple of 256
//    columns and cut into blocks of 256 weights = 64 bytes (one cache line,
//    one zmm). In block b, byte j (0..63) holds at bits 2i..2i+1 (i = 0..3)
//    the code of column b*256 + i*64 + j. So (block >> 2i) & 3 yields, in
//    byte order, the codes of 64 consecutive columns, which meet 64
//    consecutive activation bytes (AVX2 uses the 32-byte halves the same way).
//  * Rows are stored one after another, Kp/4 bytes each (64-byte aligned).
//  * Per row, nnz[r] = number of nonzero weights, and the same summed per
//    lane class (below), for the counters.
//  * Per lane slot and column, how many of the slot's rows have a nonzero
//    weight there (slot_column_nonzeros), so the zero-skip counters of a
//    call cost (zero activations) x (slots), not x (rows). The counters sum
//    rows by lane class r mod G (G = 15*tiles, lane_major_frame.h); a slot
//    is a class within a chunk of 255*G rows, so each count fits a byte.
//    Built only when it takes at most 1/8 of the codes' bytes (rows >= 32
//    slots); smaller frames leave the counting to the engine's row kernels.
// 4096x4096 takes 4 MiB (2 bits/weight; PT-5 would take 3.2 MiB but costs
// a base-3 decode per call).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fabric/frame_buffer.h"
#include "fabric/lane_major_frame.h"

namespace tfmbs::fabric {

inline constexpr int64_t kFastBlockCols = 256;
inline constexpr int64_t kFastBlockBytes = 64;
// Largest K the fast engine accepts (keeps its per-row counts and its
// zero-count chunks within 32-bit SIMD lanes with room to spare).
inline constexpr int64_t kFastMaxCols = int64_t{1} << 28;

class FastFrame {
 public:
  FastFrame() = default;
  // trits[rows*cols] row-major, each in {-1,0,1} (else FabricError(ErrPack)
  // naming row, column, value). tiles = the fabric's tile count (the
  // counters are laid out by tile); pool may be nullptr (heap).
  static FastFrame from_trits(const int8_t* trits, int64_t rows, int64_t cols, int tiles,
                              FabricPool* pool = nullptr);
  // From the spec's lane-major frame (decodes and validates it).
  static FastFrame from_lane_major(const LaneMajorFrame& frame, FabricPool* pool = nullptr);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int tiles() const { return tiles_; }
  int64_t padded_cols() const { return padded_cols_; }
  size_t row_bytes() const { return static_cast<size_t>(padded_cols_ / 4); }
  int64_t blocks_per_row() const { return padded_cols_ / kFastBlockCols; }
  const uint8_t* codes() const { return buffer_.data(); }
  const uint8_t* row_codes(int64_t r) const { return buffer_.data() + r * row_bytes(); }
  const std::vector<uint32_t>& row_nonzeros() const { return nnz_; }
  // [slots][padded_cols], or nullptr (see above); row r is in slot_of(r).
  const uint8_t* slot_column_nonzeros() const { return slots_ > 0 ? buffer_.data() + codes_bytes_ : nullptr; }
  int64_t slots() const { return slots_; }
  int64_t lane_classes() const { return int64_t{kLanesPerTile} * tiles_; }
  int64_t slot_of(int64_t r) const { return r / (255 * lane_classes()) * lane_classes() + r % lane_classes(); }
  // Per lane class k: the nonzero weights of its rows (empty for a
  // default-constructed frame).
  const std::vector<uint64_t>& class_nonzeros() const { return class_nnz_; }
  // The codes and the slot table.
  size_t bytes() const { return buffer_.size(); }

  // The weight at (r, d), decoded from the codes.
  int trit(int64_t r, int64_t d) const {
    const uint8_t byte = row_codes(r)[(d / kFastBlockCols) * kFastBlockBytes + (d % 64)];
    return ((byte >> (2 * ((d % kFastBlockCols) / 64))) & 3) - 1;
  }
  std::vector<int8_t> to_trits() const;

 private:
  FrameBuffer buffer_;
  std::vector<uint32_t> nnz_;
  std::vector<uint64_t> class_nnz_;
  size_t codes_bytes_ = 0;
  int64_t rows_ = 0, cols_ = 0, padded_cols_ = 0, slots_ = 0;
  int tiles_ = 1;
};

}  // namespace tfmbs::fabric
