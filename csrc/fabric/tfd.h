// The Ternary Frame Descriptor (TFD): the one ABI between host and fabric,
// laid out exactly as the spec's tfmbs_tfd_t (include/tfmbs.h, FABRIC.md),
// and its validation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "fabric/fabric_config.h"
#include "fabric/status.h"

namespace tfmbs::fabric {

inline constexpr uint8_t kTfdVersion = 0x01;

enum class Packing : uint16_t { Pt5 = 0x01, T2B = 0x02 };

// flags
inline constexpr uint32_t kFlagRead = 1u << 0;
inline constexpr uint32_t kFlagWrite = 1u << 1;
inline constexpr uint32_t kFlagCoherent = 1u << 2;
inline constexpr uint32_t kFlagCritical = 1u << 3;  // fail on an unknown hint
inline constexpr uint32_t kFlagPinned = 1u << 4;    // never evicted
inline constexpr uint32_t kKnownFlags =
    kFlagRead | kFlagWrite | kFlagCoherent | kFlagCritical | kFlagPinned;

enum class Kernel : uint8_t {
  Nop = 0, Dot = 1, Add = 2, Mul = 3, Conv2d = 4, MaxPool = 5, Tgemm = 6,
  Conv3d = 7, Lstm = 8, Attn = 9,
};
inline constexpr uint8_t kMaxKernelId = 9;
const char* kernel_name(Kernel kernel);  // "DOT", ...; "UNKNOWN" past 9

// exec_hints: bits 7:0 kernel id, 15:8 quantization, 16 BIAS_EN,
// 17 ZERO_SKIP_EN, 18 FREE_NEG_EN, 19 WEIGHT_BRDCST, 20 FUSED; the spec
// puts the conv/pool fields (stride, pad, kernel size, dilation, pool
// window and op) above them.
inline constexpr uint32_t kHintKernelMask = 0x000000FFu;
inline constexpr uint32_t kHintQuantShift = 8;
inline constexpr uint32_t kHintQuantMask = 0x0000FF00u;
inline constexpr uint32_t kHintBiasEn = 1u << 16;
inline constexpr uint32_t kHintZeroSkipEn = 1u << 17;
inline constexpr uint32_t kHintFreeNegEn = 1u << 18;
inline constexpr uint32_t kHintWeightBroadcast = 1u << 19;
inline constexpr uint32_t kHintFused = 1u << 20;
// The hints this fabric understands: the kernel id and quantization fields
// and bits 16..20. It runs no conv/pool kernel, so every bit from 21 up is
// an unknown hint to it: ignored normally, rejected when CRITICAL is set
// (the spec's "fail if hints are not understood"). Flag bits other than
// the five above are treated the same way.
inline constexpr uint32_t kKnownHints = 0x001FFFFFu;

struct Tfd {
  uint64_t base_addr = 0;    // fabric-local offset from the pool base; 8-byte aligned
  uint32_t frame_len = 0;    // trits in the frame
  uint16_t packing_fmt = static_cast<uint16_t>(Packing::Pt5);
  uint16_t lane_count = 15;  // <= lanes per tile (15)
  uint32_t lane_stride = 0;  // trits between elements of one lane
  uint32_t flags = 0;
  uint32_t exec_hints = 0;
  uint8_t version = kTfdVersion;
  uint8_t tile_mask = 0;     // bit t selects tile t; 0 = every tile
  uint8_t reserved[6] = {};

  Kernel kernel() const { return static_cast<Kernel>(exec_hints & kHintKernelMask); }
  uint8_t quantization() const { return static_cast<uint8_t>((exec_hints & kHintQuantMask) >> kHintQuantShift); }
  bool has_flag(uint32_t flag) const { return (flags & flag) != 0; }
  bool has_hint(uint32_t hint) const { return (exec_hints & hint) != 0; }
};
static_assert(sizeof(Tfd) == 40, "TFD layout must match tfmbs_tfd_t");
static_assert(offsetof(Tfd, frame_len) == 8 && offsetof(Tfd, packing_fmt) == 12 &&
              offsetof(Tfd, lane_count) == 14 && offsetof(Tfd, lane_stride) == 16 &&
              offsetof(Tfd, flags) == 20 && offsetof(Tfd, exec_hints) == 24 &&
              offsetof(Tfd, version) == 28 && offsetof(Tfd, tile_mask) == 29,
              "TFD field offsets must match tfmbs_tfd_t");

inline constexpr uint64_t kTfdBaseAlignment = 8;  // "64-bit aligned"

// Bytes a frame of `frame_len` trits occupies in `packing` (0 if unknown).
uint64_t packed_frame_bytes(uint16_t packing_fmt, uint64_t frame_len);

// The fabric-local offsets a frame may occupy: [begin, end). Usually the
// whole pool ({0, pool capacity}) or one allocated block.
struct AddressRange {
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct TfdCheck {
  Status status = Status::Ok;
  std::string message;  // empty when ok; else names the field and value
  bool ok() const { return status == Status::Ok; }
};

// Checks, in this order: version (ErrInvalid); packing_fmt (ErrPack);
// base_addr alignment and the frame lying inside `range` (ErrAddr);
// kernel id 0..9 (ErrInvalid); lane_count <= config.lanes_per_tile
// (ErrInvalid); tile_mask selecting only tiles < config.tiles
// (ErrInvalid); with CRITICAL, no unknown hint or flag bit (ErrInvalid).
TfdCheck validate(const Tfd& tfd, const AddressRange& range, const FabricConfig& config);
// Throws FabricError(status, message) if validate() fails.
void check_tfd(const Tfd& tfd, const AddressRange& range, const FabricConfig& config);

}  // namespace tfmbs::fabric
