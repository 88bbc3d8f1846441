// The run-time check of the SIMD levels. The feature lists come from the
// build (TFMBS_AVX2_FEATURES / TFMBS_AVX512_FEATURES / TFMBS_AMX_FEATURES,
// csrc/fabric/CMakeLists.txt), the same lists the levels' files are
// compiled with.
#include "fabric/cpu_features.h"

#include <algorithm>
#include <fstream>
#include <string>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if !defined(TFMBS_AVX2_FEATURES) || !defined(TFMBS_AVX512_FEATURES) || !defined(TFMBS_AMX_FEATURES)
#error "cpu_features.cpp needs TFMBS_AVX2_FEATURES, TFMBS_AVX512_FEATURES and TFMBS_AMX_FEATURES from csrc/fabric/CMakeLists.txt"
#endif

namespace tfmbs::fabric {
namespace {

constexpr const char* kAvx2Features = TFMBS_AVX2_FEATURES;
constexpr const char* kAvx512Features = TFMBS_AVX512_FEATURES;
constexpr const char* kAmxFeatures = TFMBS_AMX_FEATURES;

// Every feature name the lists may hold (a new name needs an entry here:
// the static_asserts below say so). __builtin_cpu_supports takes only a
// string literal, hence one entry, and one literal, per name.
struct Feature {
  std::string_view name;
  bool (*present)();
};

#if defined(__x86_64__) || defined(__i386__)
// AMX, by CPUID leaf 7 (EDX bit 24: AMX-TILE, bit 25: AMX-INT8), as not
// every compiler's __builtin_cpu_supports knows it (clang 14 does not). The
// tile state must also be enabled in XCR0 (bits 17, 18) and, on Linux,
// granted to the process (arch_prctl ARCH_REQ_XCOMP_PERM): the kernel
// enables the large tile state per process, on request, and kills one that
// uses a tile instruction without it. Asked once, for the whole process,
// when the level is probed.
bool amx_present(unsigned edx_bit) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0 || (edx >> edx_bit & 1u) == 0) return false;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0 || (ecx >> 27 & 1u) == 0) return false;  // OSXSAVE
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & (3u << 17)) != (3u << 17)) return false;
#if defined(__linux__) && defined(__x86_64__)
  static const bool granted = [] {
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
#else
  return false;
#endif
}
#define TFMBS_FEATURE(name) Feature{name, [] { return __builtin_cpu_supports(name) != 0; }}
#else
#define TFMBS_FEATURE(name) Feature{name, [] { return false; }}
#endif

constexpr Feature kFeatures[] = {
    TFMBS_FEATURE("avx2"),     TFMBS_FEATURE("fma"),
    TFMBS_FEATURE("avx512f"),  TFMBS_FEATURE("avx512bw"),
    TFMBS_FEATURE("avx512vl"), TFMBS_FEATURE("avx512vnni"),
    TFMBS_FEATURE("avx512vbmi"),
    TFMBS_FEATURE("gfni"),
#if defined(__x86_64__) || defined(__i386__)
    Feature{"amx-tile", [] { return amx_present(24); }},
    Feature{"amx-int8", [] { return amx_present(25); }},
#else
    Feature{"amx-tile", [] { return false; }},
    Feature{"amx-int8", [] { return false; }},
#endif
};
#undef TFMBS_FEATURE

constexpr const Feature* find_feature(std::string_view name) {
  for (const Feature& f : kFeatures)
    if (f.name == name) return &f;
  return nullptr;
}

// Calls fn(name) for each space-separated name of a list; false as soon as
// fn returns false.
template <class Fn>
constexpr bool all_of_list(std::string_view list, Fn fn) {
  while (!list.empty()) {
    const size_t space = list.find(' ');
    const std::string_view name = list.substr(0, space);
    if (!name.empty() && !fn(name)) return false;
    list = space == std::string_view::npos ? std::string_view{} : list.substr(space + 1);
  }
  return true;
}

constexpr bool all_known(std::string_view list) {
  return all_of_list(list, [](std::string_view n) { return find_feature(n) != nullptr; });
}
// A name without an entry above could not be checked: fail the build.
static_assert(all_known(kAvx2Features), "TFMBS_AVX2_FEATURES names a feature cpu_features.cpp cannot check");
static_assert(all_known(kAvx512Features), "TFMBS_AVX512_FEATURES names a feature cpu_features.cpp cannot check");
static_assert(all_known(kAmxFeatures), "TFMBS_AMX_FEATURES names a feature cpu_features.cpp cannot check");

[[maybe_unused]] bool list_present(std::string_view list) {
  return all_of_list(list, [](std::string_view n) { return find_feature(n)->present(); });
}

// Bit i: level i is supported.
unsigned probe() {
  unsigned mask = 1u << static_cast<unsigned>(Isa::Scalar);
#if defined(__x86_64__) || defined(__i386__)
  // Normally done by a runtime-library constructor; repeated in case this
  // runs from another static initializer first.
  __builtin_cpu_init();
  if (list_present(kAvx2Features)) mask |= 1u << static_cast<unsigned>(Isa::Avx2);
  if (list_present(kAvx512Features)) mask |= 1u << static_cast<unsigned>(Isa::Avx512);
  if (list_present(kAmxFeatures)) mask |= 1u << static_cast<unsigned>(Isa::Amx);
#endif
  return mask;
}

unsigned supported_mask() {
  static const unsigned mask = probe();
  return mask;
}

constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Amx: return "amx";
  }
  return "unknown";
}

const char* isa_features(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "";
    case Isa::Avx2: return kAvx2Features;
    case Isa::Avx512: return kAvx512Features;
    case Isa::Amx: return kAmxFeatures;
  }
  return "";
}

bool cpu_supports(Isa isa) {
  const auto bit = static_cast<unsigned>(isa);
  return bit < 8 * sizeof(unsigned) && (supported_mask() >> bit & 1u) != 0;
}

Isa best_isa() {
  static const Isa best = [] {
    Isa b = Isa::Scalar;
    for (Isa isa : kAllIsas)
      if (cpu_supports(isa)) b = isa;
    return b;
  }();
  return best;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (cpu_supports(isa)) out.push_back(isa);
  return out;
}

size_t last_level_cache_bytes() {
  static const size_t bytes = [] {
    size_t largest = 0;
    for (int index = 0; index < 16; ++index) {
      std::ifstream file("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
      std::string text;
      if (!(file >> text) || text.empty()) continue;
      size_t unit = 1;
      if (text.back() == 'K') unit = size_t{1} << 10;
      else if (text.back() == 'M') unit = size_t{1} << 20;
      else if (text.back() == 'G') unit = size_t{1} << 30;
      try {
        largest = std::max<size_t>(largest, std::stoull(text) * unit);
      } catch (const std::exception&) {
      }
    }
    return largest > 0 ? largest : size_t{32} << 20;
  }();
  return bytes;
}

}  // namespace tfmbs::fabric
