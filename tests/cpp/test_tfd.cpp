#include <gtest/gtest.h>

#include <cstring>

#include "fabric/tfd.h"

namespace tfmbs::fabric {
namespace {

constexpr AddressRange kPool{0, 1 << 20};

Tfd good() {
  Tfd t;
  t.base_addr = 4096;
  t.frame_len = 1000;  // 200 PT-5 bytes
  t.packing_fmt = 0x01;
  t.lane_count = 15;
  t.flags = kFlagRead | kFlagPinned;
  t.exec_hints = static_cast<uint32_t>(Kernel::Tgemm) | kHintZeroSkipEn;
  t.tile_mask = 0x0F;
  return t;
}

void expect_rejected(const Tfd& t, Status status, const std::string& message,
                     const FabricConfig& config = FabricConfig{}, AddressRange range = kPool) {
  const TfdCheck c = validate(t, range, config);
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.status, status) << c.message;
  EXPECT_EQ(c.message, message);
  try {
    check_tfd(t, range, config);
    ADD_FAILURE() << "check_tfd did not throw";
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), status);
    EXPECT_EQ(e.what(), message);
  }
}

TEST(Tfd, AbiLayoutMatchesSpecHeader) {
  EXPECT_EQ(sizeof(Tfd), 40u);
  EXPECT_EQ(offsetof(Tfd, base_addr), 0u);
  EXPECT_EQ(offsetof(Tfd, tile_mask), 29u);
  EXPECT_EQ(kFlagRead, 1u);
  EXPECT_EQ(kFlagWrite, 2u);
  EXPECT_EQ(kFlagCoherent, 4u);
  EXPECT_EQ(kFlagCritical, 8u);
  EXPECT_EQ(kFlagPinned, 16u);
  EXPECT_EQ(kHintBiasEn, 0x10000u);
  EXPECT_EQ(kHintZeroSkipEn, 0x20000u);
  EXPECT_EQ(kHintFreeNegEn, 0x40000u);
  EXPECT_EQ(kHintWeightBroadcast, 0x80000u);
  EXPECT_EQ(kHintFused, 0x100000u);
  EXPECT_EQ(static_cast<int>(Kernel::Tgemm), 6);
  EXPECT_EQ(static_cast<int>(Kernel::Attn), 9);
  EXPECT_STREQ(kernel_name(Kernel::Dot), "DOT");
  EXPECT_STREQ(kernel_name(Kernel::Tgemm), "TGEMM");
  EXPECT_STREQ(kernel_name(static_cast<Kernel>(10)), "UNKNOWN");
}

TEST(Tfd, Accessors) {
  Tfd t = good();
  t.exec_hints |= 7u << kHintQuantShift;
  EXPECT_EQ(t.kernel(), Kernel::Tgemm);
  EXPECT_EQ(t.quantization(), 7);
  EXPECT_TRUE(t.has_flag(kFlagPinned));
  EXPECT_FALSE(t.has_flag(kFlagWrite));
  EXPECT_TRUE(t.has_hint(kHintZeroSkipEn));
}

TEST(Tfd, PackedFrameBytes) {
  EXPECT_EQ(packed_frame_bytes(0x01, 0), 0u);
  EXPECT_EQ(packed_frame_bytes(0x01, 11), 3u);
  EXPECT_EQ(packed_frame_bytes(0x02, 11), 3u);
  EXPECT_EQ(packed_frame_bytes(0x02, 12), 3u);
  EXPECT_EQ(packed_frame_bytes(0x02, 13), 4u);
  EXPECT_EQ(packed_frame_bytes(0x03, 13), 0u);
}

TEST(Tfd, ValidDescriptorsPass) {
  EXPECT_TRUE(validate(good(), kPool, FabricConfig{}).ok());
  Tfd t = good();
  t.base_addr = (1 << 20) - 200;  // ends exactly at the end of the pool
  EXPECT_TRUE(validate(t, kPool, FabricConfig{}).ok()) << validate(t, kPool, FabricConfig{}).message;
  t = good();
  t.tile_mask = 0;  // every tile
  t.packing_fmt = 0x02;
  t.exec_hints |= kKnownHints & ~kHintKernelMask;  // all known hints
  t.flags |= kFlagCritical;
  EXPECT_TRUE(validate(t, kPool, FabricConfig{}).ok());
  t = good();
  t.exec_hints |= 1u << 25;  // unknown hint, not CRITICAL: ignored
  t.flags |= 1u << 9;        // unknown flag, not CRITICAL: ignored
  EXPECT_TRUE(validate(t, kPool, FabricConfig{}).ok());
  t = good();
  t.tile_mask = 0xFF;
  FabricConfig eight;
  eight.tiles = 8;
  EXPECT_TRUE(validate(t, kPool, eight).ok());
}

TEST(Tfd, MisalignedBaseIsErrAddr) {
  Tfd t = good();
  t.base_addr = 4100;
  expect_rejected(t, Status::ErrAddr, "TFD: base_addr=0x1004 is not 8-byte (64-bit) aligned");
}

TEST(Tfd, OutOfPoolIsErrAddr) {
  Tfd t = good();
  t.base_addr = 1 << 20;
  expect_rejected(t, Status::ErrAddr,
                  "TFD: base_addr=0x100000 with frame_len=1000 trits (200 bytes) lies outside the pool "
                  "range [0x0, 0x100000)");
  t.base_addr = (1 << 20) - 192;  // starts inside, runs 8 bytes past the end
  expect_rejected(t, Status::ErrAddr,
                  "TFD: base_addr=0xfff40 with frame_len=1000 trits (200 bytes) lies outside the pool "
                  "range [0x0, 0x100000)");
  t.base_addr = 0;  // below a range that does not start at 0
  expect_rejected(t, Status::ErrAddr,
                  "TFD: base_addr=0x0 with frame_len=1000 trits (200 bytes) lies outside the pool "
                  "range [0x40, 0x1000)",
                  FabricConfig{}, AddressRange{64, 4096});
  t.base_addr = ~uint64_t{7};  // no wrap-around in the bounds check
  EXPECT_EQ(validate(t, kPool, FabricConfig{}).status, Status::ErrAddr);
}

TEST(Tfd, UnknownPackingIsErrPack) {
  Tfd t = good();
  t.packing_fmt = 0x03;
  expect_rejected(t, Status::ErrPack, "TFD: packing_fmt=0x3 is unknown; allowed: 0x01 (PT-5), 0x02 (T2B)");
  t.packing_fmt = 0;
  expect_rejected(t, Status::ErrPack, "TFD: packing_fmt=0x0 is unknown; allowed: 0x01 (PT-5), 0x02 (T2B)");
}

TEST(Tfd, LaneCountOver15IsRejected) {
  Tfd t = good();
  t.lane_count = 16;
  expect_rejected(t, Status::ErrInvalid, "TFD: lane_count=16 is out of range; allowed: 0..15");
}

TEST(Tfd, TileMaskSelectingMissingTileIsRejected) {
  Tfd t = good();
  t.tile_mask = 0x10;  // tile 4 of a 4-tile fabric
  expect_rejected(t, Status::ErrInvalid,
                  "TFD: tile_mask=0x10 selects a missing tile; the fabric has 4 tiles (allowed mask bits 0xf)");
  FabricConfig one;
  one.tiles = 1;
  t.tile_mask = 0x03;
  expect_rejected(t, Status::ErrInvalid,
                  "TFD: tile_mask=0x3 selects a missing tile; the fabric has 1 tiles (allowed mask bits 0x1)", one);
}

TEST(Tfd, UnknownHintWithCriticalIsRejected) {
  Tfd t = good();
  t.flags |= kFlagCritical;
  t.exec_hints |= 1u << 21;
  expect_rejected(t, Status::ErrInvalid,
                  "TFD: exec_hints=0x220006 has unknown hint bits 0x200000 and CRITICAL is set; known hints: "
                  "0x1fffff");
  t = good();
  t.flags |= kFlagCritical | (1u << 5);
  expect_rejected(t, Status::ErrInvalid,
                  "TFD: flags=0x39 has unknown flag bits 0x20 and CRITICAL is set; known flags: 0x1f");
}

TEST(Tfd, UnknownKernelIdIsRejected) {
  Tfd t = good();
  t.exec_hints = 10;
  expect_rejected(t, Status::ErrInvalid, "TFD: exec_hints kernel id=10 is unknown; allowed: 0..9");
}

TEST(Tfd, WrongVersionIsRejected) {
  Tfd t = good();
  t.version = 2;
  expect_rejected(t, Status::ErrInvalid, "TFD: version=0x2 is not supported; allowed: 0x01");
}

}  // namespace
}  // namespace tfmbs::fabric
