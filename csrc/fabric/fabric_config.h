// FabricConfig: the shape and resources of the emulated fabric, from the
// environment or set through the API. Every value is range-checked; an
// invalid one throws std::invalid_argument naming the variable (or field),
// the value and the allowed range.
//
//   field           env var            default          allowed
//   tiles           TFMBS_TILES        4                1..64
//   lanes_per_tile  (none)             15               15 (fixed by the spec)
//   clock_mhz       TFMBS_CLOCK_MHZ    250              1..10000
//   pool_bytes      TFMBS_MEMORY       8 GiB            1 .. 2^47 bytes
//   num_fabrics     TFMBS_NUM_FABRICS  1                1..16
//   threads         TFMBS_THREADS      hardware cores   1..1024
//   own_threads     TFMBS_THREAD_POOL  shared           shared | own
//     (shared: the fast engine runs on the threads a host framework lends
//     it, if any; own: on its own workers, which never wait for a thread
//     the OS has not scheduled, the better choice when other busy
//     processes share the cores)
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace tfmbs::fabric {

struct FabricConfig {
  static constexpr uint32_t kMaxTiles = 64;
  static constexpr uint32_t kLanesPerTile = 15;
  static constexpr uint32_t kMaxClockMhz = 10000;
  static constexpr uint64_t kMaxPoolBytes = uint64_t{1} << 47;
  static constexpr uint32_t kMaxFabrics = 16;
  static constexpr uint32_t kMaxThreads = 1024;

  uint32_t tiles = 4;
  uint32_t lanes_per_tile = kLanesPerTile;
  uint32_t clock_mhz = 250;
  uint64_t pool_bytes = uint64_t{8} << 30;
  uint32_t num_fabrics = 1;
  uint32_t threads = default_threads();
  bool own_threads = false;

  // Lanes of the whole fabric instance (tiles * lanes_per_tile).
  uint32_t total_lanes() const { return tiles * lanes_per_tile; }

  // Throws std::invalid_argument for the first field out of range.
  void validate() const;

  // Defaults overridden by the TFMBS_* variables that are set (an empty
  // value counts as unset). `lookup` replaces getenv (tests).
  using EnvLookup = std::function<const char*(const char*)>;
  static FabricConfig from_env(const EnvLookup& lookup = {});

  // std::thread::hardware_concurrency(), or 1 if unknown.
  static uint32_t default_threads();
};

// Parses a byte size: a plain number of bytes ("4096") or a number with a
// unit, case-insensitive, optional space before it: B; KB, MB, GB, TB
// (powers of 1000); KiB, MiB, GiB, TiB and the shorthands K, M, G, T
// (powers of 1024). A fraction is allowed if the result is a whole number
// of bytes ("1.5GB", "0.5KiB"). Rejects anything else, zero, negative and
// more than 2^47 bytes with std::invalid_argument naming `name` (e.g.
// "TFMBS_MEMORY"), the text and the allowed range.
uint64_t parse_byte_size(const std::string& name, const std::string& text);

// Parses a decimal integer in [lo, hi]; same error style as above.
uint64_t parse_bounded_int(const std::string& name, const std::string& text,
                           uint64_t lo, uint64_t hi);

}  // namespace tfmbs::fabric
