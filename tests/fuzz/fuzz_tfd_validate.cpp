// TFD validator: any 40 descriptor bytes, any pool range and tile count.
// It must never crash, and "ok" must really mean the frame is aligned,
// inside the range, on existing tiles, with at most 15 lanes.
#include <cstdint>
#include <cstring>

#include "fabric/tfd.h"

using namespace tfmbs::fabric;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < sizeof(Tfd) + 17) return 0;
  Tfd tfd;
  std::memcpy(&tfd, data, sizeof(Tfd));
  AddressRange range;
  std::memcpy(&range.begin, data + sizeof(Tfd), 8);
  std::memcpy(&range.end, data + sizeof(Tfd) + 8, 8);
  FabricConfig config;
  config.tiles = 1 + data[sizeof(Tfd) + 16] % FabricConfig::kMaxTiles;

  const TfdCheck c = validate(tfd, range, config);
  if (c.ok() != c.message.empty()) __builtin_trap();
  if (c.ok()) {
    const uint64_t bytes = packed_frame_bytes(tfd.packing_fmt, tfd.frame_len);
    if (tfd.base_addr % 8 != 0 || tfd.base_addr < range.begin || tfd.base_addr >= range.end ||
        bytes > range.end - tfd.base_addr || tfd.lane_count > 15 || tfd.version != 1 ||
        (tfd.exec_hints & 0xFF) > 9 || (config.tiles < 8 && (tfd.tile_mask >> config.tiles) != 0) ||
        ((tfd.flags & kFlagCritical) && (tfd.exec_hints & ~kKnownHints)))
      __builtin_trap();
  }
  try {
    check_tfd(tfd, range, config);
    if (!c.ok()) __builtin_trap();
  } catch (const FabricError& e) {
    if (c.ok() || e.status() != c.status) __builtin_trap();
  }
  return 0;
}
