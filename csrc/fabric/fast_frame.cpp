#include "fabric/fast_frame.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "fabric/status.h"

namespace tfmbs::fabric {

FastFrame FastFrame::from_trits(const int8_t* trits, int64_t rows, int64_t cols, int tiles,
                                FabricPool* pool) {
  check_frame_shape(rows, cols, tiles);
  if (cols > kFastMaxCols)
    throw std::invalid_argument("fast frame: cols=" + std::to_string(cols) +
                                " exceeds the fast engine's limit " + std::to_string(kFastMaxCols));
  FastFrame f;
  f.rows_ = rows;
  f.cols_ = cols;
  f.tiles_ = tiles;
  f.padded_cols_ = (cols + kFastBlockCols - 1) / kFastBlockCols * kFastBlockCols;
  f.buffer_ = FrameBuffer(static_cast<size_t>(rows) * f.row_bytes(), pool);
  f.nnz_.assign(static_cast<size_t>(rows), 0);
  // 0x55 = four codes of 1 (zero weights): the padding.
  std::fill(f.buffer_.data(), f.buffer_.data() + f.buffer_.size(), uint8_t{0x55});
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = f.buffer_.data() + r * f.row_bytes();
    uint32_t nnz = 0;
    for (int64_t d = 0; d < cols; ++d) {
      const int w = trits[r * cols + d];
      if (w < -1 || w > 1) {
        throw FabricError(Status::ErrPack, "fast frame: trit at row " + std::to_string(r) +
                                               ", column " + std::to_string(d) + " is " +
                                               std::to_string(w) + "; allowed values are -1, 0, 1");
      }
      nnz += w != 0;
      const int shift = static_cast<int>(2 * ((d % kFastBlockCols) / 64));
      uint8_t& byte = row[(d / kFastBlockCols) * kFastBlockBytes + (d % 64)];
      byte = static_cast<uint8_t>((byte & ~(3u << shift)) | (static_cast<unsigned>(w + 1) << shift));
    }
    f.nnz_[static_cast<size_t>(r)] = nnz;
  }
  return f;
}

FastFrame FastFrame::from_lane_major(const LaneMajorFrame& frame, FabricPool* pool) {
  const std::vector<int8_t> trits = frame.to_trits();
  return from_trits(trits.data(), frame.rows(), frame.cols(), frame.tiles(), pool);
}

std::vector<int8_t> FastFrame::to_trits() const {
  std::vector<int8_t> out(static_cast<size_t>(rows_ * cols_));
  for (int64_t r = 0; r < rows_; ++r)
    for (int64_t d = 0; d < cols_; ++d) out[static_cast<size_t>(r * cols_ + d)] = static_cast<int8_t>(trit(r, d));
  return out;
}

}  // namespace tfmbs::fabric
