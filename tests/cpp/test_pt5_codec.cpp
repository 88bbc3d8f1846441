// PT-5: every implementation (scalar reference, each SIMD ISA this CPU has,
// and the dispatching pt5::encode/decode) against the spec's definition
// computed here digit by digit, and against each other on every input.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/pt5_codec.h"
#include "fabric/pt5_codec_detail.h"
#include "fabric/status.h"

namespace tfmbs::fabric::pt5 {
namespace {

struct Impl {
  std::string name;
  void (*encode)(const int8_t*, size_t, uint8_t*);
  void (*decode)(const uint8_t*, size_t, int8_t*);
};

// Every implementation this CPU can run: one per supported level (scalar
// first) and the dispatcher.
std::vector<Impl> impls() {
  std::vector<Impl> v;
  for (Isa isa : supported_isas()) {
    const detail::Codec c = detail::codec(isa);
    v.push_back({isa_name(isa), c.encode, c.decode});
  }
  v.push_back({"dispatch", pt5::encode, pt5::decode});
  return v;
}

// The spec: byte = sum_i (t_i + 1) * 3^i, t_0 first / least significant.
uint8_t spec_byte(const int8_t* t, size_t n) {
  unsigned byte = 0, w = 1;
  for (size_t i = 0; i < 5; ++i, w *= 3) byte += static_cast<unsigned>((i < n ? t[i] : 0) + 1) * w;
  return static_cast<uint8_t>(byte);
}

std::vector<int8_t> random_trits(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<int> d(-1, 1);
  std::vector<int8_t> t(n);
  for (auto& x : t) x = static_cast<int8_t>(d(rng));
  return t;
}

// Runs fn and returns the FabricError message ("" if nothing was thrown);
// fails the test if the error is not ErrPack.
template <class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const FabricError& e) {
    EXPECT_EQ(e.status(), Status::ErrPack);
    return e.what();
  }
  return "";
}

TEST(Pt5Codec, ReportsIsas) {
  std::string names;
  for (const Impl& i : impls()) names += i.name + " ";
  RecordProperty("implementations", names);
  std::printf("PT-5 implementations tested: %s(dispatch -> %s)\n", names.c_str(), isa_name(best_isa()));
}

TEST(Pt5Codec, SpecAnchors) {
  const int8_t minus[5] = {-1, -1, -1, -1, -1}, zero[5] = {}, plus[5] = {1, 1, 1, 1, 1};
  const int8_t first_plus[5] = {1, -1, -1, -1, -1};  // t_0 is the least significant digit
  for (const Impl& impl : impls()) {
    uint8_t b = 0xEE;
    impl.encode(minus, 5, &b);
    EXPECT_EQ(b, 0) << impl.name;
    impl.encode(zero, 5, &b);
    EXPECT_EQ(b, 121) << impl.name;
    impl.encode(plus, 5, &b);
    EXPECT_EQ(b, 242) << impl.name;
    impl.encode(first_plus, 5, &b);
    EXPECT_EQ(b, 2) << impl.name;
  }
}

// All 243 values, each alone and all of them together in one long frame (so
// the SIMD loops, not only their scalar tails, see every value).
TEST(Pt5Codec, All243ValuesRoundTrip) {
  std::vector<int8_t> all;
  std::vector<uint8_t> expected;
  for (unsigned b = 0; b < 243; ++b) {
    int8_t t[5];
    for (unsigned i = 0, v = b; i < 5; ++i, v /= 3) t[i] = static_cast<int8_t>(static_cast<int>(v % 3) - 1);
    ASSERT_EQ(spec_byte(t, 5), b);
    all.insert(all.end(), t, t + 5);
    expected.push_back(static_cast<uint8_t>(b));
  }
  // Twice, shifted by 3 bytes, so values land at different vector positions.
  all.insert(all.end(), all.begin() + 15, all.end());
  all.insert(all.end(), all.begin(), all.begin() + 15);
  expected.insert(expected.end(), expected.begin() + 3, expected.begin() + 243);
  expected.insert(expected.end(), expected.begin(), expected.begin() + 3);
  for (const Impl& impl : impls()) {
    for (unsigned b = 0; b < 243; ++b) {
      uint8_t byte = 0;
      impl.encode(&all[5 * b], 5, &byte);
      ASSERT_EQ(byte, b) << impl.name;
      int8_t t[5];
      impl.decode(&byte, 5, t);
      ASSERT_EQ(std::vector<int8_t>(t, t + 5), std::vector<int8_t>(&all[5 * b], &all[5 * b] + 5)) << impl.name;
    }
    std::vector<uint8_t> packed(expected.size());
    impl.encode(all.data(), all.size(), packed.data());
    EXPECT_EQ(packed, expected) << impl.name;
    std::vector<int8_t> back(all.size());
    impl.decode(expected.data(), all.size(), back.data());
    EXPECT_EQ(back, all) << impl.name;
  }
}

// Every length 0..1000: each implementation packs exactly what the spec
// says (zero-trit padding included), decodes back, and writes nothing past
// the end of its output.
TEST(Pt5Codec, RandomFramesEveryLength) {
  std::mt19937 rng(5);
  const auto all = impls();
  for (size_t n = 0; n <= 1000; ++n) {
    const auto trits = random_trits(rng, n);
    const size_t nb = packed_size(n);
    std::vector<uint8_t> expected(nb);
    for (size_t b = 0; b < nb; ++b) expected[b] = spec_byte(&trits[5 * b], n - 5 * b);
    for (const Impl& impl : all) {
      std::vector<uint8_t> packed(nb + 64, 0xAB);
      impl.encode(trits.data(), n, packed.data());
      ASSERT_EQ(std::vector<uint8_t>(packed.begin(), packed.begin() + nb), expected) << impl.name << " n=" << n;
      for (size_t i = nb; i < packed.size(); ++i) ASSERT_EQ(packed[i], 0xAB) << impl.name << " n=" << n;
      std::vector<int8_t> back(n + 64, 77);
      impl.decode(expected.data(), n, back.data());
      ASSERT_EQ(std::vector<int8_t>(back.begin(), back.begin() + n), trits) << impl.name << " n=" << n;
      for (size_t i = n; i < back.size(); ++i) ASSERT_EQ(back[i], 77) << impl.name << " n=" << n;
    }
  }
}

TEST(Pt5Codec, EveryInvalidByteValueIsErrPack) {
  for (const Impl& impl : impls()) {
    for (unsigned v = 243; v < 256; ++v) {
      const uint8_t byte = static_cast<uint8_t>(v);
      int8_t t[5];
      const std::string msg = error_of([&] { impl.decode(&byte, 5, t); });
      EXPECT_EQ(msg, "PT-5 decode: byte at offset 0 is " + std::to_string(v) + "; valid PT-5 bytes are 0..242")
          << impl.name;
    }
  }
}

// An invalid byte at every position of frames of every length 1..1000 (two
// invalid bytes: the first one must be named) - all implementations throw
// the scalar reference's message. The partial last byte counts too.
TEST(Pt5Codec, InvalidByteAtAnyPosition) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> bad(243, 255), ok(0, 242);
  const auto all = impls();
  for (size_t n = 1; n <= 1000; ++n) {
    const size_t nb = packed_size(n);
    std::vector<uint8_t> packed(nb);
    for (auto& b : packed) b = static_cast<uint8_t>(ok(rng));
    // All positions for short frames, a sample for long ones.
    const size_t step = nb <= 80 ? 1 : 7;
    for (size_t pos = n % step; pos < nb; pos += step) {
      auto frame = packed;
      frame[pos] = static_cast<uint8_t>(bad(rng));
      if (pos + 3 < nb) frame[pos + 3] = static_cast<uint8_t>(bad(rng));
      const std::string want = "PT-5 decode: byte at offset " + std::to_string(pos) + " is " +
                               std::to_string(frame[pos]) + "; valid PT-5 bytes are 0..242";
      for (const Impl& impl : all) {
        std::vector<int8_t> out(n);
        ASSERT_EQ(error_of([&] { impl.decode(frame.data(), n, out.data()); }), want)
            << impl.name << " n=" << n << " pos=" << pos;
      }
    }
  }
}

TEST(Pt5Codec, InvalidTritAtAnyPosition) {
  std::mt19937 rng(11);
  const int8_t bad_values[] = {2, -2, 3, 127, -128, 5};
  const auto all = impls();
  for (size_t n = 1; n <= 1000; ++n) {
    const auto trits = random_trits(rng, n);
    const size_t step = n <= 200 ? 1 : 13;
    for (size_t pos = n % step; pos < n; pos += step) {
      auto frame = trits;
      frame[pos] = bad_values[pos % 6];
      if (pos + 7 < n) frame[pos + 7] = 9;
      const std::string want = "PT-5 encode: trit at index " + std::to_string(pos) + " is " +
                               std::to_string(frame[pos]) + "; allowed values are -1, 0, 1";
      for (const Impl& impl : all) {
        std::vector<uint8_t> out(packed_size(n));
        ASSERT_EQ(error_of([&] { impl.encode(frame.data(), n, out.data()); }), want)
            << impl.name << " n=" << n << " pos=" << pos;
      }
    }
  }
}

TEST(Pt5Codec, LargeFramesAgreeWithScalar) {
  std::mt19937 rng(13);
  const size_t n = 1 << 16 | 3;
  const auto trits = random_trits(rng, n);
  std::vector<uint8_t> ref(packed_size(n));
  detail::encode_scalar(trits.data(), n, ref.data());
  for (const Impl& impl : impls()) {
    std::vector<uint8_t> packed(ref.size());
    impl.encode(trits.data(), n, packed.data());
    EXPECT_EQ(packed, ref) << impl.name;
    std::vector<int8_t> back(n);
    impl.decode(ref.data(), n, back.data());
    EXPECT_EQ(back, trits) << impl.name;
  }
}

}  // namespace
}  // namespace tfmbs::fabric::pt5
