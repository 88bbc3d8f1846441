#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "fabric/status.h"
#include "fabric/t2b_codec.h"

namespace tfmbs::fabric::t2b {
namespace {

TEST(T2bCodec, CodeTableAndBitOrder) {
  // code = trit + 1, trit k of a byte in bits 2k..2k+1.
  const int8_t t[4] = {-1, 0, 1, 0};
  uint8_t b = 0;
  encode(t, 4, &b);
  EXPECT_EQ(b, 0b01'10'01'00);
  int8_t back[4];
  decode(&b, 4, back);
  EXPECT_EQ(std::vector<int8_t>(back, back + 4), std::vector<int8_t>(t, t + 4));
}

// Seed 003's example: pack_ternary([1,-1,0,1,0,-1,1,1]) -> 2 bytes.
// codes (trit+1): 2,0,1,2 | 1,0,2,2, low bits first:
//   byte 0 = 2 + 0*4 + 1*16 + 2*64 = 146 = 0x92
//   byte 1 = 1 + 0*4 + 2*16 + 2*64 = 161 = 0xA1
TEST(T2bCodec, Seed003Example) {
  const int8_t w[8] = {1, -1, 0, 1, 0, -1, 1, 1};
  uint8_t packed[2] = {};
  pack_seed003(w, 8, packed);
  EXPECT_EQ(packed[0], 0x92);
  EXPECT_EQ(packed[1], 0xA1);
  int8_t back[8];
  unpack_seed003(packed, 8, back);
  EXPECT_EQ(std::vector<int8_t>(back, back + 8), std::vector<int8_t>(w, w + 8));
}

TEST(T2bCodec, RoundTripEveryLength) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> d(-1, 1);
  for (size_t n = 0; n <= 1000; ++n) {
    std::vector<int8_t> t(n);
    for (auto& x : t) x = static_cast<int8_t>(d(rng));
    std::vector<uint8_t> packed(packed_size(n) + 8, 0xCD);
    encode(t.data(), n, packed.data());
    for (size_t i = packed_size(n); i < packed.size(); ++i) ASSERT_EQ(packed[i], 0xCD);
    // Independent check of each trit's code and the zero-trit padding.
    for (size_t i = 0; i < 4 * packed_size(n); ++i) {
      const int want = i < n ? t[i] + 1 : 1;
      ASSERT_EQ((packed[i / 4] >> (2 * (i % 4))) & 3, want) << "n=" << n << " i=" << i;
    }
    std::vector<int8_t> back(n + 8, 55);
    decode(packed.data(), n, back.data());
    ASSERT_EQ(std::vector<int8_t>(back.begin(), back.begin() + n), t) << n;
    for (size_t i = n; i < back.size(); ++i) ASSERT_EQ(back[i], 55);
  }
}

TEST(T2bCodec, AllByteValues) {
  for (unsigned b = 0; b < 256; ++b) {
    const uint8_t byte = static_cast<uint8_t>(b);
    int8_t t[4];
    bool has_invalid = false;
    for (unsigned k = 0; k < 4; ++k) has_invalid |= ((b >> (2 * k)) & 3) == 3;
    if (has_invalid) {
      EXPECT_THROW(decode(&byte, 4, t), FabricError) << b;
    } else {
      decode(&byte, 4, t);
      for (unsigned k = 0; k < 4; ++k) EXPECT_EQ(t[k], static_cast<int>((b >> (2 * k)) & 3) - 1);
    }
  }
}

TEST(T2bCodec, InvalidCodeNamesTritAndByte) {
  const uint8_t packed[3] = {0x55, 0b01'11'01'01, 0x55};  // trit 6 (byte 1, bits 4..5)
  int8_t out[12];
  try {
    decode(packed, 12, out);
    FAIL() << "no error";
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), Status::ErrPack);
    EXPECT_STREQ(e.what(),
                 "T2B decode: trit 6 (byte offset 1, value 117, bits 4..5) has code 0b11; "
                 "valid codes are 0b00 (-1), 0b01 (0), 0b10 (+1)");
  }
}

TEST(T2bCodec, PadBitsAreIgnored) {
  // 5 trits: byte 1 uses only bits 0..1; 0b11 in its pad bits is not read.
  const uint8_t packed[2] = {0b10'01'00'01, 0b11'11'11'10};
  int8_t out[5];
  decode(packed, 5, out);
  EXPECT_EQ(std::vector<int8_t>(out, out + 5), (std::vector<int8_t>{0, -1, 0, 1, 1}));
  const uint8_t bad_used[2] = {0x55, 0b11'11'11'11};
  EXPECT_THROW(decode(bad_used, 5, out), FabricError);
}

TEST(T2bCodec, InvalidTritIsErrPack) {
  const int8_t t[6] = {0, 1, -1, 0, 2, 0};
  uint8_t out[2];
  try {
    encode(t, 6, out);
    FAIL() << "no error";
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), Status::ErrPack);
    EXPECT_STREQ(e.what(), "T2B encode: trit at index 4 is 2; allowed values are -1, 0, 1");
  }
}

}  // namespace
}  // namespace tfmbs::fabric::t2b
