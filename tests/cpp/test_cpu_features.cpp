// The CPU-feature probe (cpu_features.h), and every SIMD kernel family run
// on every level this CPU supports against the scalar level, on random data:
// PT-5 encode/decode, and the fast engine's int8, ternary and fp32 GEMMs
// (with the zero-activation counting kernels they use). test_pt5_codec.cpp
// and test_fast_engine.cpp loop over supported_isas() too, in more depth
// and against the spec / the reference engine; this file keeps every
// family's per-level coverage in one place.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/fast_engine.h"
#include "fabric/fast_frame.h"
#include "fabric/pt5_codec.h"
#include "fabric/pt5_codec_detail.h"
#include "fabric/status.h"

namespace tfmbs::fabric {
namespace {

constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx};

// The SIMD levels this CPU runs (the ones compared with Scalar).
std::vector<Isa> simd_isas() {
  std::vector<Isa> v = supported_isas();
  v.erase(std::remove(v.begin(), v.end(), Isa::Scalar), v.end());
  return v;
}

TEST(CpuFeatures, SupportedIsasAreConsistent) {
  const std::vector<Isa> isas = supported_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::Scalar);
  EXPECT_EQ(isas.back(), best_isa());
  EXPECT_TRUE(cpu_supports(Isa::Scalar));
  EXPECT_TRUE(cpu_supports(best_isa()));
  for (size_t i = 1; i < isas.size(); ++i) EXPECT_LT(isas[i - 1], isas[i]);
  for (Isa isa : kAllIsas) {
    EXPECT_EQ(cpu_supports(isa), std::find(isas.begin(), isas.end(), isa) != isas.end()) << isa_name(isa);
    // Levels nest: every level up to the best one is supported.
    EXPECT_EQ(cpu_supports(isa), isa <= best_isa()) << isa_name(isa);
  }
  EXPECT_FALSE(cpu_supports(static_cast<Isa>(4)));  // no such level
  EXPECT_EQ(supported_isas(), isas);  // cached, stable
  std::string names;
  for (Isa isa : isas) names += std::string(isa_name(isa)) + " ";
  RecordProperty("supported_isas", names);
  std::printf("CPU levels: %s(best %s)\n", names.c_str(), isa_name(best_isa()));
}

// Space-separated names -> list.
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t j = std::min(s.find(' ', i), s.size());
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

TEST(CpuFeatures, NamesAndFeatureLists) {
  EXPECT_STREQ(isa_name(Isa::Scalar), "scalar");
  EXPECT_STREQ(isa_name(Isa::Avx2), "avx2");
  EXPECT_STREQ(isa_name(Isa::Avx512), "avx512");
  EXPECT_STREQ(isa_name(Isa::Amx), "amx");
  EXPECT_STREQ(isa_features(Isa::Scalar), "");
  const auto avx2 = split(isa_features(Isa::Avx2)), avx512 = split(isa_features(Isa::Avx512)),
             amx = split(isa_features(Isa::Amx));
  EXPECT_FALSE(avx2.empty());
  // Each level asks for everything the one below does (the levels nest)
  // and more.
  for (const std::string& f : avx2)
    EXPECT_NE(std::find(avx512.begin(), avx512.end(), f), avx512.end()) << f;
  for (const std::string& f : avx512) EXPECT_NE(std::find(amx.begin(), amx.end(), f), amx.end()) << f;
  EXPECT_GT(avx512.size(), avx2.size());
  EXPECT_GT(amx.size(), avx512.size());
  RecordProperty("avx2_features", isa_features(Isa::Avx2));
  RecordProperty("avx512_features", isa_features(Isa::Avx512));
  RecordProperty("amx_features", isa_features(Isa::Amx));
}

std::vector<int8_t> random_trits(std::mt19937& rng, size_t n, double zero_fraction = 1.0 / 3) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int8_t> t(n);
  for (auto& v : t) v = u(rng) < zero_fraction ? 0 : (rng() & 1 ? 1 : -1);
  return t;
}

std::vector<int8_t> random_int8(std::mt19937& rng, size_t n, double zero_fraction) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int8_t> x(n);
  for (auto& v : x) {
    if (u(rng) < zero_fraction) { v = 0; continue; }
    do v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128); while (v == 0);
  }
  return x;
}

std::vector<float> random_float(std::mt19937& rng, size_t n, double zero_fraction) {
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(n);
  for (auto& v : x) {
    const double p = u(rng);
    if (p < zero_fraction) v = (rng() & 1) ? 0.0f : -0.0f;
    else v = g(rng) * (p < 0.1 + zero_fraction ? 1e6f : 1.0f);  // magnitudes that make the order matter
  }
  return x;
}

std::string pack_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const FabricError& e) {
    return e.what();
  }
  return "";
}

TEST(CpuFeatures, Pt5CodecMatchesScalarOnEveryIsa) {
  std::mt19937 rng(17);
  const pt5::detail::Codec scalar = pt5::detail::codec(Isa::Scalar);
  for (size_t n : {size_t{0}, size_t{1}, size_t{159}, size_t{160}, size_t{319}, size_t{320}, size_t{321},
                   size_t{5 * 64 * 7 + 3}, size_t{100003}}) {
    const auto trits = random_trits(rng, n);
    std::vector<uint8_t> ref(pt5::packed_size(n));
    scalar.encode(trits.data(), n, ref.data());
    for (Isa isa : simd_isas()) {
      SCOPED_TRACE(testing::Message() << "isa=" << isa_name(isa) << " n=" << n);
      const pt5::detail::Codec c = pt5::detail::codec(isa);
      std::vector<uint8_t> packed(ref.size() + 64, 0xAB);
      c.encode(trits.data(), n, packed.data());
      ASSERT_EQ(std::vector<uint8_t>(packed.begin(), packed.begin() + static_cast<long>(ref.size())), ref);
      for (size_t i = ref.size(); i < packed.size(); ++i) ASSERT_EQ(packed[i], 0xAB);
      std::vector<int8_t> back(n + 64, 77);
      c.decode(ref.data(), n, back.data());
      ASSERT_EQ(std::vector<int8_t>(back.begin(), back.begin() + static_cast<long>(n)), trits);
      for (size_t i = n; i < back.size(); ++i) ASSERT_EQ(back[i], 77);
      if (n > 0) {  // an invalid trit / byte late in the frame: the scalar code's error
        auto bad_trits = trits;
        bad_trits[n - 1] = 2;
        std::vector<uint8_t> out(ref.size());
        EXPECT_EQ(pack_error([&] { c.encode(bad_trits.data(), n, out.data()); }),
                  pack_error([&] { scalar.encode(bad_trits.data(), n, out.data()); }));
        auto bad_bytes = ref;
        bad_bytes[bad_bytes.size() - 1] = 250;
        std::vector<int8_t> t(n);
        EXPECT_EQ(pack_error([&] { c.decode(bad_bytes.data(), n, t.data()); }),
                  pack_error([&] { scalar.decode(bad_bytes.data(), n, t.data()); }));
      }
    }
  }
}

#define EXPECT_COUNTERS_EQ(ref, got) \
  EXPECT_TRUE((ref) == (got)) << "first difference (scalar vs simd): " << (ref).first_difference(got)

struct Shape {
  int64_t rows, cols;
};
// Row counts that leave tail tiles, column counts that end mid-block.
const Shape kShapes[] = {{37, 600}, {130, 257}, {8, 1000}};

// int8 and ternary GEMMs: the int8 kernels, plus the zero-activation
// counting - fused into the AVX-512 product (N <= 255), the zero-count
// kernels (N = 300, or the other levels with many zeros) or the few-zeros
// lookup.
TEST(CpuFeatures, FastEngineInt8AndTernaryMatchScalarOnEveryIsa) {
  std::mt19937 rng(23);
  const FastEngine scalar(FastEngineOptions{Isa::Scalar, 1, nullptr});
  for (const Shape& s : kShapes) {
    const auto w = random_trits(rng, static_cast<size_t>(s.rows * s.cols), 0.4);
    const auto f = FastFrame::from_trits(w.data(), s.rows, s.cols, 4);
    for (int64_t n : {1, 4, 9, 300}) {
      for (double xz : {0.0, 0.001, 0.3}) {
        const size_t nx = static_cast<size_t>(n * s.cols), ny = static_cast<size_t>(n * s.rows);
        const auto x = random_int8(rng, nx, xz);
        const auto xt = random_trits(rng, nx, xz);
        std::vector<int32_t> y_ref(ny), yt_ref(ny);
        const OpCounters c_ref = scalar.tgemm_int8(f, x.data(), n, y_ref.data());
        const OpCounters ct_ref = scalar.tgemm_ternary(f, xt.data(), n, yt_ref.data());
        for (Isa isa : simd_isas()) {
          SCOPED_TRACE(testing::Message() << "isa=" << isa_name(isa) << " M=" << s.rows << " K=" << s.cols
                                          << " N=" << n << " xzero=" << xz);
          const FastEngine e(FastEngineOptions{isa, 1, nullptr});
          std::vector<int32_t> y(ny, 0x5a5a5a5a);
          const OpCounters c = e.tgemm_int8(f, x.data(), n, y.data());
          ASSERT_EQ(y, y_ref);
          EXPECT_COUNTERS_EQ(c_ref, c);
          std::vector<int32_t> yt(ny, 0x5a5a5a5a);
          const OpCounters ct = e.tgemm_ternary(f, xt.data(), n, yt.data());
          ASSERT_EQ(yt, yt_ref);
          EXPECT_COUNTERS_EQ(ct_ref, ct);
        }
      }
    }
  }
}

// fp32 GEMM: the FMA path (all activations finite) and the masked path
// (an inf or NaN present), bit for bit; zeros in the activations exercise
// the zero-count kernels.
TEST(CpuFeatures, FastEngineFp32MatchesScalarOnEveryIsa) {
  std::mt19937 rng(29);
  const FastEngine scalar(FastEngineOptions{Isa::Scalar, 1, nullptr});
  for (const Shape& s : kShapes) {
    const auto w = random_trits(rng, static_cast<size_t>(s.rows * s.cols), 0.4);
    const auto f = FastFrame::from_trits(w.data(), s.rows, s.cols, 4);
    for (int64_t n : {1, 5, 9}) {
      for (bool finite : {true, false}) {
        const size_t ny = static_cast<size_t>(n * s.rows);
        auto x = random_float(rng, static_cast<size_t>(n * s.cols), 0.3);
        if (!finite) {
          x[1] = INFINITY;
          x[x.size() / 2] = -INFINITY;
          x[x.size() - 1] = NAN;
        }
        std::vector<float> y_ref(ny);
        const OpCounters c_ref = scalar.tgemm_fp32(f, x.data(), n, y_ref.data());
        for (Isa isa : simd_isas()) {
          SCOPED_TRACE(testing::Message() << "isa=" << isa_name(isa) << " M=" << s.rows << " K=" << s.cols
                                          << " N=" << n << " finite=" << finite);
          const FastEngine e(FastEngineOptions{isa, 1, nullptr});
          std::vector<float> y(ny, 12345.0f);
          const OpCounters c = e.tgemm_fp32(f, x.data(), n, y.data());
          for (size_t i = 0; i < ny; ++i) {
            if (std::isnan(y_ref[i])) {
              ASSERT_TRUE(std::isnan(y[i])) << i;  // NaN payloads may differ
            } else {
              ASSERT_EQ(std::memcmp(&y[i], &y_ref[i], sizeof(float)), 0) << i << ": " << y[i] << " vs " << y_ref[i];
            }
          }
          EXPECT_COUNTERS_EQ(c_ref, c);
        }
      }
    }
  }
}

}  // namespace
}  // namespace tfmbs::fabric
