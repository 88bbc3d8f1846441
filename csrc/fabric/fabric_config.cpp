#include "fabric/fabric_config.h"

#include <cctype>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "fabric/fabric_pool.h"

namespace tfmbs::fabric {
namespace {

std::string quoted(const std::string& text) { return "\"" + text + "\""; }

[[noreturn]] void reject(const std::string& name, const std::string& value,
                         const std::string& why, const std::string& allowed) {
  throw std::invalid_argument(name + "=" + quoted(value) + " " + why + "; allowed: " + allowed);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

// Bytes per unit; 0 for an unknown unit.
uint64_t unit_bytes(const std::string& unit) {
  const std::string u = lower(unit);
  if (u.empty() || u == "b") return 1;
  static const char* const kBinary[] = {"k", "m", "g", "t"};
  static const char* const kDecimal[] = {"kb", "mb", "gb", "tb"};
  uint64_t bin = 1, dec = 1;
  for (int i = 0; i < 4; ++i) {
    bin *= 1024;
    dec *= 1000;
    if (u == kBinary[i] || u == std::string(kBinary[i]) + "ib") return bin;
    if (u == kDecimal[i]) return dec;
  }
  return 0;
}

constexpr const char* kSizeRange =
    "a positive size up to 2^47 bytes (128 TiB), e.g. 512MiB, 8GiB, 1.5GB or a plain number of bytes";

}  // namespace

uint64_t parse_byte_size(const std::string& name, const std::string& text) {
  const std::string s = trim(text);
  size_t i = 0;
  unsigned __int128 mantissa = 0;  // digits without the decimal point
  unsigned __int128 scale = 1;     // 10^(digits after the point)
  size_t digits = 0;
  bool point = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '.' && !point) {
      point = true;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      if (++digits > 20) reject(name, text, "has too many digits", kSizeRange);
      mantissa = mantissa * 10 + static_cast<unsigned>(c - '0');
      if (point) scale *= 10;
    } else {
      break;
    }
  }
  if (digits == 0) {
    const bool negative = !s.empty() && s[0] == '-';
    reject(name, text, negative ? "is negative" : "is not a byte size", kSizeRange);
  }
  const uint64_t unit = unit_bytes(trim(s.substr(i)));
  if (unit == 0) reject(name, text, "has an unknown unit", kSizeRange);
  const unsigned __int128 numerator = mantissa * unit;
  if (numerator % scale != 0) reject(name, text, "is not a whole number of bytes", kSizeRange);
  const unsigned __int128 bytes = numerator / scale;
  if (bytes == 0) reject(name, text, "is zero", kSizeRange);
  if (bytes > FabricConfig::kMaxPoolBytes) reject(name, text, "is too large", kSizeRange);
  return static_cast<uint64_t>(bytes);
}

uint64_t parse_bounded_int(const std::string& name, const std::string& text,
                           uint64_t lo, uint64_t hi) {
  const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  const std::string s = trim(text);
  if (s.empty()) reject(name, text, "is not an integer", range);
  if (s[0] == '-') reject(name, text, "is out of range", range);
  uint64_t value = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) reject(name, text, "is not an integer", range);
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > hi) reject(name, text, "is out of range", range);
  }
  if (value < lo) reject(name, text, "is out of range", range);
  return value;
}

uint32_t FabricConfig::default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : (n > kMaxThreads ? kMaxThreads : n);
}

void FabricConfig::validate() const {
  auto check = [](const char* field, uint64_t value, uint64_t lo, uint64_t hi, const char* note) {
    if (value < lo || value > hi)
      throw std::invalid_argument(std::string("FabricConfig.") + field + "=" + std::to_string(value) +
                                  " is out of range; allowed: " + std::to_string(lo) + ".." +
                                  std::to_string(hi) + note);
  };
  check("tiles (TFMBS_TILES)", tiles, 1, kMaxTiles, "");
  check("lanes_per_tile", lanes_per_tile, kLanesPerTile, kLanesPerTile,
        " (a tile has 15 lanes by the spec)");
  check("clock_mhz (TFMBS_CLOCK_MHZ)", clock_mhz, 1, kMaxClockMhz, "");
  check("pool_bytes (TFMBS_MEMORY)", pool_bytes, 1, kMaxPoolBytes, " bytes");
  check("num_fabrics (TFMBS_NUM_FABRICS)", num_fabrics, 1, kMaxFabrics, "");
  check("threads (TFMBS_THREADS)", threads, 1, kMaxThreads, "");
}

FabricConfig FabricConfig::from_env(const EnvLookup& lookup) {
  auto get = [&](const char* name) -> const char* {
    const char* v = lookup ? lookup(name) : std::getenv(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
  };
  FabricConfig c;
  if (const char* v = get("TFMBS_TILES"))
    c.tiles = static_cast<uint32_t>(parse_bounded_int("TFMBS_TILES", v, 1, kMaxTiles));
  if (const char* v = get("TFMBS_CLOCK_MHZ"))
    c.clock_mhz = static_cast<uint32_t>(parse_bounded_int("TFMBS_CLOCK_MHZ", v, 1, kMaxClockMhz));
  if (const char* v = get("TFMBS_MEMORY")) {
    c.pool_bytes = parse_byte_size("TFMBS_MEMORY", v);
    // The pool is made of whole segments: reject less than one, round up
    // to whole ones so that the configuration says what the pool holds.
    if (c.pool_bytes < kSegmentGranularity) {
      throw std::invalid_argument(std::string("TFMBS_MEMORY=\"") + v +
                                  "\" is smaller than one pool segment; allowed: 2MiB up to 2^47 bytes");
    }
    c.pool_bytes = (c.pool_bytes + kSegmentGranularity - 1) / kSegmentGranularity * kSegmentGranularity;
  }
  if (const char* v = get("TFMBS_NUM_FABRICS"))
    c.num_fabrics = static_cast<uint32_t>(parse_bounded_int("TFMBS_NUM_FABRICS", v, 1, kMaxFabrics));
  if (const char* v = get("TFMBS_THREADS"))
    c.threads = static_cast<uint32_t>(parse_bounded_int("TFMBS_THREADS", v, 1, kMaxThreads));
  if (const char* v = get("TFMBS_THREAD_POOL")) {
    const std::string pool = v;
    if (pool != "shared" && pool != "own")
      throw std::invalid_argument("TFMBS_THREAD_POOL=\"" + pool + "\" is not a thread pool; allowed: shared, own");
    c.own_threads = pool == "own";
  }
  c.validate();
  return c;
}

}  // namespace tfmbs::fabric
