#include "fabric/tfd.h"

#include <cstdio>

namespace tfmbs::fabric {
namespace {

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

TfdCheck fail(Status status, std::string message) { return {status, "TFD: " + std::move(message)}; }

}  // namespace

const char* kernel_name(Kernel kernel) {
  switch (kernel) {
    case Kernel::Nop: return "NOP";
    case Kernel::Dot: return "DOT";
    case Kernel::Add: return "ADD";
    case Kernel::Mul: return "MUL";
    case Kernel::Conv2d: return "CONV2D";
    case Kernel::MaxPool: return "MAXPOOL";
    case Kernel::Tgemm: return "TGEMM";
    case Kernel::Conv3d: return "CONV3D";
    case Kernel::Lstm: return "LSTM";
    case Kernel::Attn: return "ATTN";
  }
  return "UNKNOWN";
}

uint64_t packed_frame_bytes(uint16_t packing_fmt, uint64_t frame_len) {
  switch (static_cast<Packing>(packing_fmt)) {
    case Packing::Pt5: return (frame_len + 4) / 5;
    case Packing::T2B: return (frame_len + 3) / 4;
  }
  return 0;
}

TfdCheck validate(const Tfd& tfd, const AddressRange& range, const FabricConfig& config) {
  if (tfd.version != kTfdVersion)
    return fail(Status::ErrInvalid, "version=" + hex(tfd.version) + " is not supported; allowed: 0x01");

  const uint16_t fmt = tfd.packing_fmt;
  if (fmt != static_cast<uint16_t>(Packing::Pt5) && fmt != static_cast<uint16_t>(Packing::T2B))
    return fail(Status::ErrPack, "packing_fmt=" + hex(fmt) + " is unknown; allowed: 0x01 (PT-5), 0x02 (T2B)");

  if (tfd.base_addr % kTfdBaseAlignment != 0)
    return fail(Status::ErrAddr, "base_addr=" + hex(tfd.base_addr) + " is not 8-byte (64-bit) aligned");
  const uint64_t bytes = packed_frame_bytes(fmt, tfd.frame_len);
  const std::string span = "[" + hex(range.begin) + ", " + hex(range.end) + ")";
  if (tfd.base_addr < range.begin || tfd.base_addr >= range.end ||
      bytes > range.end - tfd.base_addr)
    return fail(Status::ErrAddr, "base_addr=" + hex(tfd.base_addr) + " with frame_len=" +
                                     std::to_string(tfd.frame_len) + " trits (" + std::to_string(bytes) +
                                     " bytes) lies outside the pool range " + span);

  const uint32_t kernel_id = tfd.exec_hints & kHintKernelMask;
  if (kernel_id > kMaxKernelId)
    return fail(Status::ErrInvalid, "exec_hints kernel id=" + std::to_string(kernel_id) +
                                        " is unknown; allowed: 0..9");

  if (tfd.lane_count > config.lanes_per_tile)
    return fail(Status::ErrInvalid, "lane_count=" + std::to_string(tfd.lane_count) +
                                        " is out of range; allowed: 0.." +
                                        std::to_string(config.lanes_per_tile));

  const uint64_t present = config.tiles >= 8 ? 0xFF : (uint64_t{1} << config.tiles) - 1;
  if ((tfd.tile_mask & ~present) != 0)
    return fail(Status::ErrInvalid, "tile_mask=" + hex(tfd.tile_mask) + " selects a missing tile; the fabric has " +
                                        std::to_string(config.tiles) + " tiles (allowed mask bits " +
                                        hex(present) + ")");

  if (tfd.has_flag(kFlagCritical)) {
    if (const uint32_t unknown = tfd.exec_hints & ~kKnownHints)
      return fail(Status::ErrInvalid, "exec_hints=" + hex(tfd.exec_hints) + " has unknown hint bits " +
                                          hex(unknown) + " and CRITICAL is set; known hints: " +
                                          hex(kKnownHints));
    if (const uint32_t unknown = tfd.flags & ~kKnownFlags)
      return fail(Status::ErrInvalid, "flags=" + hex(tfd.flags) + " has unknown flag bits " + hex(unknown) +
                                          " and CRITICAL is set; known flags: " + hex(kKnownFlags));
  }
  return {};
}

void check_tfd(const Tfd& tfd, const AddressRange& range, const FabricConfig& config) {
  TfdCheck c = validate(tfd, range, config);
  if (!c.ok()) throw FabricError(c.status, c.message);
}

}  // namespace tfmbs::fabric
