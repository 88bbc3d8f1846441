#include "fabric/lane_major_frame.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "fabric/pt5_codec.h"
#include "fabric/status.h"

namespace tfmbs::fabric {

void check_frame_shape(int64_t rows, int64_t cols, int tiles) {
  if (rows < 0)
    throw std::invalid_argument("weight frame: rows=" + std::to_string(rows) + " must be >= 0");
  if (cols < 0)
    throw std::invalid_argument("weight frame: cols=" + std::to_string(cols) + " must be >= 0");
  if (tiles < 1 || tiles > 255)
    throw std::invalid_argument("weight frame: tiles=" + std::to_string(tiles) +
                                " out of range [1, 255]");
}

int64_t lane_major_passes(int64_t rows, int tiles) {
  const int64_t group = int64_t{kLanesPerTile} * tiles;
  return (rows + group - 1) / group;
}

size_t lane_major_bytes(int64_t rows, int64_t cols, int tiles) {
  check_frame_shape(rows, cols, tiles);
  return kLaneWordBytes * static_cast<size_t>(lane_major_passes(rows, tiles)) *
         static_cast<size_t>(tiles) * static_cast<size_t>(cols);
}

void pack_lane_major(const int8_t* trits, int64_t rows, int64_t cols, int tiles, uint8_t* out) {
  const size_t bytes = lane_major_bytes(rows, cols, tiles);
  (void)bytes;
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (trits[i] < -1 || trits[i] > 1) {
      throw FabricError(Status::ErrPack, "weight frame: trit at row " + std::to_string(i / cols) +
                                             ", column " + std::to_string(i % cols) + " is " +
                                             std::to_string(trits[i]) +
                                             "; allowed values are -1, 0, 1");
    }
  }
  const int64_t passes = lane_major_passes(rows, tiles);
  int8_t lanes[kLanesPerTile];
  for (int64_t p = 0; p < passes; ++p) {
    for (int t = 0; t < tiles; ++t) {
      const int64_t row0 = (p * tiles + t) * kLanesPerTile;
      for (int64_t d = 0; d < cols; ++d) {
        for (int l = 0; l < kLanesPerTile; ++l) {
          const int64_t r = row0 + l;
          lanes[l] = r < rows ? trits[r * cols + d] : 0;
        }
        uint8_t* w = out + lane_major_word_offset(p, t, d, cols, tiles);
        pt5::encode(lanes, kLanesPerTile, w);
        w[3] = 0;
      }
    }
  }
}

void unpack_lane_major(const uint8_t* frame, int64_t rows, int64_t cols, int tiles, int8_t* trits) {
  lane_major_bytes(rows, cols, tiles);  // validates the shape
  const int64_t passes = lane_major_passes(rows, tiles);
  int8_t lanes[kLanesPerTile];
  for (int64_t p = 0; p < passes; ++p) {
    for (int t = 0; t < tiles; ++t) {
      const int64_t row0 = (p * tiles + t) * kLanesPerTile;
      for (int64_t d = 0; d < cols; ++d) {
        const size_t off = lane_major_word_offset(p, t, d, cols, tiles);
        for (int b = 0; b < 3; ++b) {
          if (frame[off + b] >= 243) {
            throw FabricError(Status::ErrPack, "weight frame: PT-5 byte at offset " +
                                                   std::to_string(off + b) + " is " +
                                                   std::to_string(frame[off + b]) +
                                                   "; valid PT-5 bytes are 0..242");
          }
        }
        pt5::decode(frame + off, kLanesPerTile, lanes);
        for (int l = 0; l < kLanesPerTile; ++l) {
          const int64_t r = row0 + l;
          if (r < rows) trits[r * cols + d] = lanes[l];
        }
      }
    }
  }
}

LaneMajorFrame LaneMajorFrame::from_trits(const int8_t* trits, int64_t rows, int64_t cols,
                                          int tiles, FabricPool* pool) {
  LaneMajorFrame f;
  f.buffer_ = FrameBuffer(lane_major_bytes(rows, cols, tiles), pool);
  f.rows_ = rows;
  f.cols_ = cols;
  f.tiles_ = tiles;
  pack_lane_major(trits, rows, cols, tiles, f.buffer_.data());
  return f;
}

LaneMajorFrame LaneMajorFrame::from_bytes(const uint8_t* bytes, size_t size, int64_t rows,
                                          int64_t cols, int tiles, FabricPool* pool) {
  const size_t expected = lane_major_bytes(rows, cols, tiles);
  if (size != expected) {
    throw std::invalid_argument("weight frame: " + std::to_string(size) + " bytes given, a " +
                                std::to_string(rows) + "x" + std::to_string(cols) + " frame on " +
                                std::to_string(tiles) + " tiles takes " + std::to_string(expected));
  }
  for (size_t i = 0; i < size; ++i) {
    if (i % kLaneWordBytes != 3 && bytes[i] >= 243) {
      throw FabricError(Status::ErrPack, "weight frame: PT-5 byte at offset " + std::to_string(i) +
                                             " is " + std::to_string(bytes[i]) +
                                             "; valid PT-5 bytes are 0..242");
    }
  }
  LaneMajorFrame f;
  f.buffer_ = FrameBuffer(size, pool);
  f.rows_ = rows;
  f.cols_ = cols;
  f.tiles_ = tiles;
  if (size) std::copy(bytes, bytes + size, f.buffer_.data());
  return f;
}

std::vector<int8_t> LaneMajorFrame::to_trits() const {
  std::vector<int8_t> out(static_cast<size_t>(rows_ * cols_));
  unpack_lane_major(data(), rows_, cols_, tiles_, out.data());
  return out;
}

}  // namespace tfmbs::fabric
