#include <gtest/gtest.h>

#include <map>
#include <stdexcept>
#include <string>

#include "fabric/fabric_config.h"

namespace tfmbs::fabric {
namespace {

// Runs fn, expects std::invalid_argument and returns its message.
template <class Fn>
std::string message_of(Fn fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument";
  return "";
}

FabricConfig from(const std::map<std::string, std::string>& env) {
  return FabricConfig::from_env([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(FabricConfig, Defaults) {
  const FabricConfig c = from({});
  EXPECT_EQ(c.tiles, 4u);
  EXPECT_EQ(c.lanes_per_tile, 15u);
  EXPECT_EQ(c.clock_mhz, 250u);
  EXPECT_EQ(c.pool_bytes, uint64_t{8} << 30);
  EXPECT_EQ(c.num_fabrics, 1u);
  EXPECT_EQ(c.threads, FabricConfig::default_threads());
  EXPECT_GE(c.threads, 1u);
  EXPECT_EQ(c.total_lanes(), 60u);
}

TEST(FabricConfig, FromEnvironment) {
  const FabricConfig c = from({{"TFMBS_TILES", "8"}, {"TFMBS_CLOCK_MHZ", "1000"},
                               {"TFMBS_MEMORY", "512MiB"}, {"TFMBS_NUM_FABRICS", "3"},
                               {"TFMBS_THREADS", "2"}, {"TFMBS_UNRELATED", "x"}});
  EXPECT_EQ(c.tiles, 8u);
  EXPECT_EQ(c.clock_mhz, 1000u);
  EXPECT_EQ(c.pool_bytes, uint64_t{512} << 20);
  EXPECT_EQ(c.num_fabrics, 3u);
  EXPECT_EQ(c.threads, 2u);
  EXPECT_FALSE(c.own_threads);
  EXPECT_TRUE(from({{"TFMBS_THREAD_POOL", "own"}}).own_threads);
  EXPECT_FALSE(from({{"TFMBS_THREAD_POOL", "shared"}}).own_threads);
  EXPECT_EQ(from({{"TFMBS_TILES", ""}}).tiles, 4u);  // empty = unset
}

TEST(FabricConfig, MemoryIsWholePoolSegments) {
  EXPECT_EQ(from({{"TFMBS_MEMORY", "3MiB"}}).pool_bytes, uint64_t{4} << 20);
  EXPECT_EQ(from({{"TFMBS_MEMORY", "2MiB"}}).pool_bytes, uint64_t{2} << 20);
  for (const char* small : {"1B", "1MiB", "2097151"}) {
    const std::string m = message_of([&] { from({{"TFMBS_MEMORY", small}}); });
    EXPECT_EQ(m, std::string("TFMBS_MEMORY=\"") + small +
                     "\" is smaller than one pool segment; allowed: 2MiB up to 2^47 bytes");
  }
}

TEST(FabricConfig, RealGetenvIsTheDefaultLookup) {
  ::setenv("TFMBS_TILES", "5", 1);
  const FabricConfig c = FabricConfig::from_env();
  ::unsetenv("TFMBS_TILES");
  EXPECT_EQ(c.tiles, 5u);
}

TEST(FabricConfig, EnvErrorsNameVariableValueAndRange) {
  EXPECT_EQ(message_of([] { from({{"TFMBS_TILES", "0"}}); }),
            "TFMBS_TILES=\"0\" is out of range; allowed: 1..64");
  EXPECT_EQ(message_of([] { from({{"TFMBS_TILES", "65"}}); }),
            "TFMBS_TILES=\"65\" is out of range; allowed: 1..64");
  EXPECT_EQ(message_of([] { from({{"TFMBS_TILES", "four"}}); }),
            "TFMBS_TILES=\"four\" is not an integer; allowed: 1..64");
  EXPECT_EQ(message_of([] { from({{"TFMBS_TILES", "-3"}}); }),
            "TFMBS_TILES=\"-3\" is out of range; allowed: 1..64");
  EXPECT_EQ(message_of([] { from({{"TFMBS_CLOCK_MHZ", "10001"}}); }),
            "TFMBS_CLOCK_MHZ=\"10001\" is out of range; allowed: 1..10000");
  EXPECT_EQ(message_of([] { from({{"TFMBS_NUM_FABRICS", "17"}}); }),
            "TFMBS_NUM_FABRICS=\"17\" is out of range; allowed: 1..16");
  EXPECT_EQ(message_of([] { from({{"TFMBS_THREADS", "0"}}); }),
            "TFMBS_THREADS=\"0\" is out of range; allowed: 1..1024");
  EXPECT_EQ(message_of([] { from({{"TFMBS_THREADS", "99999999999999999999999"}}); }),
            "TFMBS_THREADS=\"99999999999999999999999\" is out of range; allowed: 1..1024");
  EXPECT_EQ(message_of([] { from({{"TFMBS_THREAD_POOL", "omp"}}); }),
            "TFMBS_THREAD_POOL=\"omp\" is not a thread pool; allowed: shared, own");
  const std::string mem = message_of([] { from({{"TFMBS_MEMORY", "lots"}}); });
  EXPECT_EQ(mem.rfind("TFMBS_MEMORY=\"lots\" is not a byte size; allowed: a positive size up to 2^47", 0), 0u)
      << mem;
}

TEST(FabricConfig, ParseByteSize) {
  EXPECT_EQ(parse_byte_size("X", "4096"), 4096u);
  EXPECT_EQ(parse_byte_size("X", "512MiB"), uint64_t{512} << 20);
  EXPECT_EQ(parse_byte_size("X", "8GiB"), uint64_t{8} << 30);
  EXPECT_EQ(parse_byte_size("X", "8gib"), uint64_t{8} << 30);
  EXPECT_EQ(parse_byte_size("X", "1.5GB"), 1500000000u);
  EXPECT_EQ(parse_byte_size("X", "1.5GiB"), uint64_t{3} << 29);
  EXPECT_EQ(parse_byte_size("X", " 64 KB "), 64000u);
  EXPECT_EQ(parse_byte_size("X", "2K"), 2048u);
  EXPECT_EQ(parse_byte_size("X", "3M"), uint64_t{3} << 20);
  EXPECT_EQ(parse_byte_size("X", "10B"), 10u);
  EXPECT_EQ(parse_byte_size("X", "128TiB"), uint64_t{1} << 47);  // the limit itself
}

TEST(FabricConfig, ParseByteSizeRejects) {
  auto why = [](const char* text) {
    const std::string m = message_of([&] { parse_byte_size("TFMBS_MEMORY", text); });
    const std::string head = std::string("TFMBS_MEMORY=\"") + text + "\" ";
    EXPECT_EQ(m.rfind(head, 0), 0u) << m;
    EXPECT_NE(m.find("allowed: a positive size up to 2^47 bytes"), std::string::npos) << m;
    return m.substr(head.size(), m.find(';') - head.size());
  };
  EXPECT_EQ(why(""), "is not a byte size");
  EXPECT_EQ(why("GiB"), "is not a byte size");
  EXPECT_EQ(why("abc"), "is not a byte size");
  EXPECT_EQ(why("-1GiB"), "is negative");
  EXPECT_EQ(why("0"), "is zero");
  EXPECT_EQ(why("0MiB"), "is zero");
  EXPECT_EQ(why("12parsecs"), "has an unknown unit");
  EXPECT_EQ(why("1e9"), "has an unknown unit");
  EXPECT_EQ(why("1.2.3"), "has an unknown unit");
  EXPECT_EQ(why("0.5B"), "is not a whole number of bytes");
  EXPECT_EQ(why("128.5TiB"), "is too large");
  EXPECT_EQ(why("140737488355329"), "is too large");  // 2^47 + 1
  EXPECT_EQ(why("999999999999999999999999999"), "has too many digits");
}

TEST(FabricConfig, ApiValidation) {
  FabricConfig c;
  c.validate();
  c.lanes_per_tile = 16;
  EXPECT_EQ(message_of([&] { c.validate(); }),
            "FabricConfig.lanes_per_tile=16 is out of range; allowed: 15..15 (a tile has 15 lanes by the spec)");
  c = FabricConfig{};
  c.tiles = 0;
  EXPECT_EQ(message_of([&] { c.validate(); }),
            "FabricConfig.tiles (TFMBS_TILES)=0 is out of range; allowed: 1..64");
  c = FabricConfig{};
  c.pool_bytes = (uint64_t{1} << 47) + 1;
  EXPECT_EQ(message_of([&] { c.validate(); }),
            "FabricConfig.pool_bytes (TFMBS_MEMORY)=140737488355329 is out of range; allowed: "
            "1..140737488355328 bytes");
  c = FabricConfig{};
  c.clock_mhz = 0;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c = FabricConfig{};
  c.num_fabrics = 17;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c = FabricConfig{};
  c.threads = 0;
  EXPECT_THROW(c.validate(), std::invalid_argument);
}

TEST(ParseBoundedInt, Accepts) {
  EXPECT_EQ(parse_bounded_int("N", "7", 1, 10), 7u);
  EXPECT_EQ(parse_bounded_int("N", " 10 ", 1, 10), 10u);
  EXPECT_THROW(parse_bounded_int("N", "1.5", 1, 10), std::invalid_argument);
  EXPECT_THROW(parse_bounded_int("N", "+3", 1, 10), std::invalid_argument);
}

}  // namespace
}  // namespace tfmbs::fabric
