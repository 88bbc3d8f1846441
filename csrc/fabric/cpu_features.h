// The fabric's one CPU-feature probe: which SIMD level (Isa) this CPU can
// run. Every SIMD kernel file belongs to one level - tfmbs_simd_sources()
// in csrc/fabric/CMakeLists.txt - and is compiled with exactly that level's
// feature flags, and the code calls into it only when cpu_supports(level),
// the run-time check of the same list, holds. Both must be the same list:
// the compiler may use any instruction its flags allow anywhere in such a
// file (not only in the intrinsics written there), so a flag the check does
// not ask for can kill the process on a CPU without that feature.
//
// The lists are defined once, as TFMBS_AVX2_FEATURES, TFMBS_AVX512_FEATURES
// and TFMBS_AMX_FEATURES in csrc/fabric/CMakeLists.txt; CMake turns each
// name into the flag -m<name> for the level's files and hands the lists to
// cpu_features.cpp, which checks each name with __builtin_cpu_supports (so
// the check cannot drift from the flags). They are, and why:
//
//   Scalar  nothing beyond baseline x86-64; always supported.
//   Avx2    avx2 fma
//             avx2: the 256-bit integer, float and shuffle ops of the
//                   *_avx2.cpp files;
//             fma:  the fast engine's fp32 kernel (_mm256_fmadd_ps in
//                   fast_engine_avx2.cpp).
//   Avx512  avx2 fma avx512f avx512bw avx512vl avx512vnni avx512vbmi
//             avx2 fma: Avx2's list, so that the levels nest (a CPU that
//                   runs Avx512 runs Avx2) and the 256/128-bit code in the
//                   AVX-512 files is covered;
//             avx512f: 512-bit registers, masks, fp32 ops;
//             avx512bw: byte/word ops (shifts, packs, mullo/mulhi, byte
//                   compares, blends, masked byte loads/stores);
//             avx512vl: the fp32 kernel's 128-bit byte compares into masks
//                   (_mm_cmpeq_epi8_mask, fast_engine_avx512.cpp);
//             avx512vnni: vpdpbusd (fast_engine_avx512.cpp);
//             avx512vbmi: the PT-5 codec's byte permutes (vpermb, vpermt2b
//                   in pt5_codec_avx512.cpp).
//   Amx     Avx512's list, amx-tile amx-int8 gfni
//             amx-tile, amx-int8: the tile registers and tdpbusd of the
//                   fast engine's batched int8 kernel (fast_engine_amx.cpp);
//                   the check also asks Linux for the tile state
//                   (arch_prctl ARCH_REQ_XCOMP_PERM), which a process must
//                   hold before its first tile instruction;
//             gfni: that kernel's one-instruction 2-bit field extraction
//                   (vgf2p8affineqb). Every CPU with AMX has it.
//           Everything else runs the Avx512 kernels at this level.
//
// No file uses BMI2 (pdep/pext), POPCNT, AVX512DQ or AVX512VPOPCNTDQ
// instructions, so no level asks for them or enables them. The flags do
// enable what they imply (-mavx2: AVX and SSE3..SSE4.2, with GCC also
// POPCNT; -mavx512f: AVX2), which every CPU with the listed features has.
// __builtin_cpu_supports also requires the OS to save the level's registers
// (YMM for AVX2, ZMM and mask registers for AVX-512), so an OS or VM that
// does not gets a lower level.
//
// Avx512 is a single level rather than one per AVX-512 subset, so a CPU
// with AVX-512 but without VNNI or VBMI runs Avx2: Skylake-SP/X, Cascade
// Lake and Cooper Lake (no VBMI), Cannon Lake (no VNNI), Knights Landing
// and Knights Mill (no BW/VL). Ice Lake, Tiger Lake, Rocket Lake, Sapphire
// Rapids and later Xeons, and AMD Zen 4 and Zen 5 run Avx512; Sapphire
// Rapids and later Xeons run Amx.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tfmbs::fabric {

enum class Isa : uint8_t { Scalar = 0, Avx2 = 1, Avx512 = 2, Amx = 3 };

// "scalar", "avx2", "avx512", "amx".
const char* isa_name(Isa isa);
// The features the level's check asks for, space-separated as listed above
// ("" for Scalar).
const char* isa_features(Isa isa);
// Whether this CPU (and OS) can run the level's code: every listed feature
// is present. Computed once.
bool cpu_supports(Isa isa);
// The highest supported level (computed once).
Isa best_isa();
// The size of the CPU's largest cache as the OS reports it (Linux sysfs),
// or 32 MiB where it does not say. Computed once.
size_t last_level_cache_bytes();
// Every level this CPU runs, lowest first: Scalar, then Avx2, Avx512, Amx
// if supported.
std::vector<Isa> supported_isas();

}  // namespace tfmbs::fabric
