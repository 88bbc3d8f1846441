#include "fabric/fast_frame.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "fabric/cpu_features.h"
#include "fabric/status.h"

namespace tfmbs::fabric {

void FastFrame::swap(FastFrame& other) noexcept {
  using std::swap;
  swap(buffer_, other.buffer_);
  swap(nnz_, other.nnz_);
  swap(class_nnz_, other.class_nnz_);
  swap(codes_bytes_, other.codes_bytes_);
  swap(pt5_offset_, other.pt5_offset_);
  swap(pt5_bytes_, other.pt5_bytes_);
  swap(last_read_, other.last_read_);
  swap(rows_, other.rows_);
  swap(cols_, other.cols_);
  swap(padded_cols_, other.padded_cols_);
  swap(slots_, other.slots_);
  swap(tiles_, other.tiles_);
}

FastFrame FastFrame::from_trits(const int8_t* trits, int64_t rows, int64_t cols, int tiles,
                                FabricPool* pool, Pt5Rows pt5_rows) {
  check_frame_shape(rows, cols, tiles);
  if (cols > kFastMaxCols)
    throw std::invalid_argument("fast frame: cols=" + std::to_string(cols) +
                                " exceeds the fast engine's limit " + std::to_string(kFastMaxCols));
  FastFrame f;
  f.rows_ = rows;
  f.cols_ = cols;
  f.tiles_ = tiles;
  f.padded_cols_ = (cols + kFastBlockCols - 1) / kFastBlockCols * kFastBlockCols;
  f.nnz_.assign(static_cast<size_t>(rows), 0);
  // Validate first (so the error names the first bad element), then pack
  // 4 codes per byte without per-element checks.
  const int64_t total = rows * cols;
  for (int64_t i = 0; i < total; ++i) {
    if (static_cast<unsigned>(trits[i] + 1) > 2u) {
      throw FabricError(Status::ErrPack, "fast frame: trit at row " + std::to_string(i / cols) +
                                             ", column " + std::to_string(i % cols) + " is " +
                                             std::to_string(trits[i]) + "; allowed values are -1, 0, 1");
    }
  }
  const int64_t blocks = f.blocks_per_row();
  const int64_t chunk_rows = 255 * f.lane_classes();
  const int64_t slots = (rows + chunk_rows - 1) / chunk_rows * f.lane_classes();
  f.slots_ = 32 * slots <= rows ? slots : 0;
  // The slot table follows the codes in the same block, so the pool counts
  // it with the frame.
  f.codes_bytes_ = static_cast<size_t>(rows) * f.row_bytes();
  f.pt5_offset_ = f.codes_bytes_ + static_cast<size_t>(f.slots_ * f.padded_cols_);
  const bool with_pt5 = pt5_rows == Pt5Rows::Yes ||
                        (pt5_rows == Pt5Rows::Auto && f.slots_ > 0 && cpu_supports(Isa::Avx512));
  if (with_pt5) {
    f.pt5_bytes_ = static_cast<size_t>((rows + kPt5BlockRows - 1) / kPt5BlockRows) * f.pt5_block_bytes();
    f.last_read_ = std::make_unique<std::atomic<uint64_t>>(0);
  }
  f.buffer_ = FrameBuffer(f.pt5_offset_ + f.pt5_bytes_, pool);
  f.class_nnz_.assign(static_cast<size_t>(f.lane_classes()), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* src = trits + r * cols;
    uint8_t* row = f.buffer_.data() + r * f.row_bytes();
    uint32_t nnz = 0;
    for (int64_t d = 0; d < cols; ++d) nnz += src[d] != 0;
    if (f.slots_ > 0) {
      uint8_t* counts = f.buffer_.data() + f.codes_bytes_ + f.slot_of(r);
      for (int64_t d = 0; d < cols; ++d) counts[d * f.slots_] = static_cast<uint8_t>(counts[d * f.slots_] + (src[d] != 0));
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t base = b * kFastBlockCols;
      uint8_t* out = row + b * kFastBlockBytes;
      if (base + kFastBlockCols <= cols) {
        for (int j = 0; j < 64; ++j) {
          out[j] = static_cast<uint8_t>((src[base + j] + 1) | ((src[base + 64 + j] + 1) << 2) |
                                        ((src[base + 128 + j] + 1) << 4) | ((src[base + 192 + j] + 1) << 6));
        }
      } else {  // the padded tail: missing columns are zero weights (code 1)
        for (int j = 0; j < 64; ++j) {
          unsigned byte = 0;
          for (int i = 0; i < 4; ++i) {
            const int64_t d = base + i * 64 + j;
            byte |= static_cast<unsigned>((d < cols ? src[d] : 0) + 1) << (2 * i);
          }
          out[j] = static_cast<uint8_t>(byte);
        }
      }
    }
    if (with_pt5) f.pack_pt5_row(r, src);
    f.nnz_[static_cast<size_t>(r)] = nnz;
    f.class_nnz_[static_cast<size_t>(r % f.lane_classes())] += nnz;
  }
  // Rows past the last of the final row block: zero weights.
  if (with_pt5) {
    for (int64_t r = rows; r % kPt5BlockRows != 0; ++r) f.pack_pt5_row(r, nullptr);
  }
  return f;
}

void FastFrame::pack_pt5_row(int64_t r, const int8_t* trits) {
  uint8_t* block = buffer_.data() + pt5_offset_ + static_cast<size_t>(r / kPt5BlockRows) * pt5_block_bytes();
  const int64_t i = r % kPt5BlockRows;
  for (int64_t g = 0; g < 2 * pt5_pairs(); ++g) {
    int byte = 0;
    for (int k = 4; k >= 0; --k) {
      const int64_t d = 5 * g + k;
      byte = 3 * byte + (trits != nullptr && d < cols_ ? trits[d] : 0) + 1;
    }
    block[(g / 2) * 64 + 2 * i + g % 2] = static_cast<uint8_t>(byte);
  }
}

FastFrame FastFrame::from_lane_major(const LaneMajorFrame& frame, FabricPool* pool, Pt5Rows pt5_rows) {
  const std::vector<int8_t> trits = frame.to_trits();
  return from_trits(trits.data(), frame.rows(), frame.cols(), frame.tiles(), pool, pt5_rows);
}

std::vector<int8_t> FastFrame::to_trits() const {
  std::vector<int8_t> out(static_cast<size_t>(rows_ * cols_));
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t d = 0; d < cols_; ++d) out[static_cast<size_t>(r * cols_ + d)] = static_cast<int8_t>(trit(r, d));
  return out;
}

}  // namespace tfmbs::fabric
