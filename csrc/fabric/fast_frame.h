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
//  * Optionally the same weights again as PT-5 row blocks, for the batch-1
//    lookup-table kernel: 1.6 bits/weight, so a call that streams the
//    frame from DRAM reads a fifth fewer bytes. Per 32 rows (a row block)
//    and per pair p of 5-column groups, 64 bytes: byte 2i + h is the PT-5
//    byte sum_k (w[r, 10p + 5h + k] + 1) * 3^k of row r = 32*block + i.
//    Rows past the last and columns past cols are zero weights.
// 4096x4096 on 4 tiles takes 4 MiB of codes, 240 KiB of slot counts and
// 3.2 MiB of PT-5 row blocks.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "fabric/frame_buffer.h"
#include "fabric/lane_major_frame.h"

namespace tfmbs::fabric {

inline constexpr int64_t kFastBlockCols = 256;
inline constexpr int64_t kFastBlockBytes = 64;
// Largest K the fast engine accepts (keeps its per-row counts and its
// zero-count chunks within 32-bit SIMD lanes with room to spare).
inline constexpr int64_t kFastMaxCols = int64_t{1} << 28;
inline constexpr int64_t kPt5BlockRows = 32;

// Whether a frame keeps PT-5 row blocks. Auto: when it keeps slot counts
// (a frame that size is what streams from memory) and this CPU runs the
// lookup-table kernel (Isa::Avx512).
enum class Pt5Rows : uint8_t { Auto, Yes, No };

class FastFrame {
 public:
  FastFrame() = default;
  // A moved-from frame is empty, as a default-constructed one.
  FastFrame(FastFrame&& other) noexcept { swap(other); }
  FastFrame& operator=(FastFrame&& other) noexcept {
    FastFrame(std::move(other)).swap(*this);
    return *this;
  }
  void swap(FastFrame& other) noexcept;
  // trits[rows*cols] row-major, each in {-1,0,1} (else FabricError(ErrPack)
  // naming row, column, value). tiles = the fabric's tile count (the
  // counters are laid out by tile); pool may be nullptr (heap).
  static FastFrame from_trits(const int8_t* trits, int64_t rows, int64_t cols, int tiles,
                              FabricPool* pool = nullptr, Pt5Rows pt5_rows = Pt5Rows::Auto);
  // From the spec's lane-major frame (decodes and validates it).
  static FastFrame from_lane_major(const LaneMajorFrame& frame, FabricPool* pool = nullptr,
                                   Pt5Rows pt5_rows = Pt5Rows::Auto);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int tiles() const { return tiles_; }
  int64_t padded_cols() const { return padded_cols_; }
  size_t row_bytes() const { return static_cast<size_t>(padded_cols_ / 4); }
  int64_t blocks_per_row() const { return padded_cols_ / kFastBlockCols; }
  const uint8_t* codes() const { return buffer_.data(); }
  const uint8_t* row_codes(int64_t r) const { return buffer_.data() + r * row_bytes(); }
  const std::vector<uint32_t>& row_nonzeros() const { return nnz_; }
  // [padded_cols][slots], or nullptr (see above); row r is in slot_of(r).
  // Column-major: a call reads the counts of its zero columns only, each
  // column's slots in one or a few cache lines.
  const uint8_t* slot_column_nonzeros() const { return slots_ > 0 ? buffer_.data() + codes_bytes_ : nullptr; }
  int64_t slots() const { return slots_; }
  int64_t lane_classes() const { return int64_t{kLanesPerTile} * tiles_; }
  int64_t slot_of(int64_t r) const { return r / (255 * lane_classes()) * lane_classes() + r % lane_classes(); }
  // Per lane class k: the nonzero weights of its rows (empty for a
  // default-constructed frame).
  const std::vector<uint64_t>& class_nonzeros() const { return class_nnz_; }
  // The PT-5 row blocks (above), or nullptr.
  const uint8_t* pt5_rows() const { return pt5_bytes_ > 0 ? buffer_.data() + pt5_offset_ : nullptr; }
  int64_t pt5_pairs() const { return (cols_ + 9) / 10; }
  size_t pt5_block_bytes() const { return static_cast<size_t>(pt5_pairs()) * 64; }
  // Where in the engines' stream of frame bytes (fast_engine.cpp) this
  // frame was last read, 0 before its first read (on the heap: an atomic
  // does not move with the frame). Kept for frames with PT-5 rows only.
  std::atomic<uint64_t>& last_read() const { return *last_read_; }
  size_t codes_bytes() const { return codes_bytes_; }
  size_t pt5_bytes() const { return pt5_bytes_; }
  // The codes, the slot table and the PT-5 row blocks.
  size_t bytes() const { return buffer_.size(); }

  // The weight at (r, d), decoded from the codes.
  int trit(int64_t r, int64_t d) const {
    const uint8_t byte = row_codes(r)[(d / kFastBlockCols) * kFastBlockBytes + (d % 64)];
    return ((byte >> (2 * ((d % kFastBlockCols) / 64))) & 3) - 1;
  }
  std::vector<int8_t> to_trits() const;

 private:
  // Row r's PT-5 bytes in its row block (trits: its cols weights, or
  // nullptr for a pad row of zeros).
  void pack_pt5_row(int64_t r, const int8_t* trits);

  FrameBuffer buffer_;
  std::vector<uint32_t> nnz_;
  std::vector<uint64_t> class_nnz_;
  size_t codes_bytes_ = 0, pt5_offset_ = 0, pt5_bytes_ = 0;
  std::unique_ptr<std::atomic<uint64_t>> last_read_;
  int64_t rows_ = 0, cols_ = 0, padded_cols_ = 0, slots_ = 0;
  int tiles_ = 1;
};

}  // namespace tfmbs::fabric
