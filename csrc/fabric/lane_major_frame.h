// The spec's lane-major weight frame (FABRIC.md, "Weights are stored
// lane-major"), which the reference engine executes.
//
// A weight matrix W[M, K] (trits, row-major) on a fabric of T tiles of 15
// lanes is cut into passes of G = 15*T output rows. In pass p, tile t, lane l
// owns row r = p*G + t*15 + l (rows >= M are zero trits). Bank A of tile t
// holds, for each input step d = 0..K-1, one 32-bit word: the 15 lane trits
// W[r(l), d] for l = 0..14 as 3 PT-5 bytes (lane 0 is the first trit of the
// first byte, lane 14 the last trit of the third) and a pad byte (written 0,
// ignored when read). Words are stored pass-major, then tile, then step:
//   word(p, t, d) at byte offset 4 * ((p*T + t) * K + d).
// Frame size: 4 * P * T * K bytes, P = ceil(M / G).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fabric/frame_buffer.h"
#include "fabric/telemetry.h"  // kLanesPerTile

namespace tfmbs::fabric {

inline constexpr size_t kLaneWordBytes = 4;

// Throws std::invalid_argument naming the argument unless rows >= 0,
// cols >= 0, 1 <= tiles <= 255.
void check_frame_shape(int64_t rows, int64_t cols, int tiles);
int64_t lane_major_passes(int64_t rows, int tiles);
size_t lane_major_bytes(int64_t rows, int64_t cols, int tiles);
inline size_t lane_major_word_offset(int64_t pass, int tile, int64_t step, int64_t cols, int tiles) {
  return kLaneWordBytes * static_cast<size_t>((pass * tiles + tile) * cols + step);
}

// trits[rows*cols] row-major, each in {-1,0,1} (else FabricError(ErrPack)
// naming row, column and value) -> out[lane_major_bytes(...)].
void pack_lane_major(const int8_t* trits, int64_t rows, int64_t cols, int tiles, uint8_t* out);
// The inverse. An invalid PT-5 byte throws FabricError(ErrPack) naming its
// frame offset and value. Pad bytes are ignored.
void unpack_lane_major(const uint8_t* frame, int64_t rows, int64_t cols, int tiles, int8_t* trits);

// An owned lane-major frame.
class LaneMajorFrame {
 public:
  LaneMajorFrame() = default;
  // `pool` may be nullptr (heap); otherwise a Resident block of that pool.
  static LaneMajorFrame from_trits(const int8_t* trits, int64_t rows, int64_t cols, int tiles,
                                   FabricPool* pool = nullptr);
  // Adopts already packed bytes (copied), e.g. a frame produced by a TFD.
  // Validates every PT-5 byte (FabricError(ErrPack)).
  static LaneMajorFrame from_bytes(const uint8_t* bytes, size_t size, int64_t rows, int64_t cols,
                                   int tiles, FabricPool* pool = nullptr);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int tiles() const { return tiles_; }
  int64_t passes() const { return lane_major_passes(rows_, tiles_); }
  const uint8_t* data() const { return buffer_.data(); }
  size_t size() const { return buffer_.size(); }
  const uint8_t* word(int64_t pass, int tile, int64_t step) const {
    return buffer_.data() + lane_major_word_offset(pass, tile, step, cols_, tiles_);
  }
  std::vector<int8_t> to_trits() const;

 private:
  FrameBuffer buffer_;
  int64_t rows_ = 0, cols_ = 0;
  int tiles_ = 1;
};

}  // namespace tfmbs::fabric
