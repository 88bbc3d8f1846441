// Internal: the fast engine's per-ISA kernels over the FastFrame layout
// (fast_frame.h). Plain structs and functions only: the SIMD translation
// units are compiled with ISA flags, so nothing here may instantiate an
// inline/template function that other code could share (ODR would let the
// linker pick the AVX-512 copy for everybody).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tfmbs::fabric::fast_detail {

// Batch rows handled together so every decoded weight vector is reused.
inline constexpr int kBatchTile = 8;

// The int8 kernels' first pass over a call's codes streams them from
// memory; they prefetch the lines this far ahead of the read position, into
// L2 (_MM_HINT_T2), and the hardware brings them on to L1. Prefetching
// into L1 from that far holds the core's few L1 miss buffers for a whole
// DRAM latency, and demand loads queue behind them; much nearer, the lines
// arrive late.
inline constexpr int64_t kPrefetchBytes = 8192;

// Where a kernel reads the weights: a FastFrame's codes and geometry.
struct FrameCodes {
  const uint8_t* codes = nullptr;  // FastFrame::codes()
  size_t row_bytes = 0;
  int64_t blocks = 0;              // 256-column blocks per row
};

struct Int8Job : FrameCodes {
  const int8_t* x = nullptr;       // [n][x_stride] activations, zero-padded to blocks*256
  int64_t x_stride = 0;
  const int32_t* x_sum = nullptr;  // [n] sum of each activation row (wrapping)
  // The AMX kernel's B operand: x laid out by amx_pack_activations, or
  // nullptr (the AMX kernel then runs the AVX-512 one).
  const int8_t* x_tiles = nullptr;
  int64_t n = 0;                   // batch rows
  int64_t m = 0;                   // output rows (y's row stride)
  int32_t* y = nullptr;            // [n][m]
  // Optional zero-hit counting fused into the product, for frames without
  // slot counts (the AVX2 and AVX-512 kernels; the scalar one leaves it to
  // a separate pass):
  // zero_hits[r] = sum_d |w[r,d]| * zero_counts[d],
  // zero_counts[d] = number of batch rows with x[n,d] == 0 (needs n <= 255
  // and n * K < 2^31); only the columns that hold a zero are visited
  // (AVX-512: 64-column groups whose group_has_zero flag is set; AVX2: the
  // listed 32-column slices), so a few zeros cost almost nothing.
  const uint8_t* zero_counts = nullptr;     // [x_stride] or nullptr
  const uint8_t* group_has_zero = nullptr;  // [blocks * 4] (AVX-512)
  const int32_t* zero_slices = nullptr;     // 32-column slices d / 32 holding a zero, ascending (AVX2)
  int64_t zero_slice_count = 0;
  uint64_t* zero_hits = nullptr;            // [m]
};

// Zero-activation hits for the counters: for each weight row r,
//   zero_hits[r] = sum_c sum_d |w[r,d]| * zero_counts[c][d],
// where zero_counts[c][d] (u8) is how many batch rows of chunk c have a zero
// activation in column d (pad columns: 0). A chunk's sum fits in int32
// (the caller sizes chunks so that 255-or-fewer rows * K < 2^31).
struct ZeroCountJob : FrameCodes {
  const uint8_t* zero_counts = nullptr;  // [chunks][stride]
  int64_t stride = 0;
  int64_t chunks = 0;
  uint64_t* zero_hits = nullptr;         // [m]
};

struct Fp32Job : FrameCodes {
  const float* x = nullptr;  // [n][x_stride], zero-padded to blocks*256
  int64_t x_stride = 0;
  int64_t n = 0, m = 0;
  float* y = nullptr;        // [n][m]
  // Every activation is finite: then fma(w, x, acc) with w in {-1, 0, +1}
  // equals the masked add/subtract/skip exactly (w*x is exact, fma rounds
  // once; acc + (+-0) = acc because a bank is never -0.0), and the kernels
  // may use it. With an inf/NaN present, 0 * x would differ: masked path.
  bool all_finite = false;
};

// Batch 1 over a frame's PT-5 row blocks (fast_frame.h), by table lookup:
// for each 5-column group, int16 tables of the activations' partial sums
// over the trit patterns of its first 3 columns (27) and last 2 (9); a
// PT-5 byte b splits exactly into q = b / 27 (the last 2 trits) and r = b -
// 27q (the first 3), so a group's product for 32 rows at once is two
// vpermw lookups. The tables hold sums of codes c = w + 1 times x, as the
// int8 kernels' products do, so y = sum - sum(x) again.
// Per pair p of groups, 4 x 32 int16: [0] the even group's 3-trit table,
// [1] the odd group's, [2] and [3] their 2-trit tables (entries 0..8).
inline constexpr int64_t pt5_table_entries(int64_t pairs) { return pairs * 128; }
// x: the activations, readable (zero) up to 10 * pairs.
void pt5_tables_scalar(const int8_t* x, int64_t pairs, int16_t* tables);
void pt5_tables_avx512(const int8_t* x, int64_t pairs, int16_t* tables);

struct Pt5Job {
  const uint8_t* blocks = nullptr;  // FastFrame::pt5_rows()
  size_t block_bytes = 0;
  int64_t pairs = 0;
  const int16_t* tables = nullptr;  // 64-byte aligned
  int32_t x_sum = 0;                // sum of the activations (wrapping)
  int64_t m = 0;                    // output rows
  int32_t* y = nullptr;             // [m]
};
// Output rows [r0, r1), r0 a multiple of kPt5BlockRows.
void pt5_rows_scalar(const Pt5Job& job, int64_t r0, int64_t r1);
void pt5_rows_avx512(const Pt5Job& job, int64_t r0, int64_t r1);

// The AMX kernel pays off from this many batch rows (below, the AVX-512
// kernel is faster).
inline constexpr int64_t kAmxMinBatch = 5;
// Weight rows the AMX kernel takes at a time at most (rows past a whole
// group run the AVX-512 kernel), so the engine hands out multiples of it.
inline constexpr int64_t kAmxRowGroup = 32;
// Bytes amx_pack_activations writes for n batch rows of padded_cols.
inline constexpr int64_t amx_activation_bytes(int64_t n, int64_t padded_cols) {
  return padded_cols * ((n + 15) / 16) * 16;
}
// Lays out x[n][x_stride] (zero-padded to padded_cols, a multiple of 256)
// as tdpbusd's B tiles: per 64 columns s and 16 batch rows tb, 16 tile
// rows q of 64 bytes, bytes 4u..4u+3 = x[16tb + u][64s + 4q .. 64s + 4q + 3]
// (zero past row n), tiles ordered by s then tb. out: 64-byte aligned.
void amx_pack_activations(const int8_t* x, int64_t x_stride, int64_t n, int64_t padded_cols, int8_t* out);

// One batch row of int8 activations into the engine's copy: dst[d] =
// src[d] for d < cols (dst's padding is the caller's), and counts[d] += 1
// where src[d] == 0 (u8: the caller gives each counts row fewer than 256
// batch rows). Returns the row's sum (wrapping) and whether it has a zero.
struct ActivationRow {
  int32_t sum = 0;
  bool has_zero = false;
};
ActivationRow copy_activation_row_scalar(const int8_t* src, int64_t cols, int8_t* dst, uint8_t* counts);
ActivationRow copy_activation_row_avx2(const int8_t* src, int64_t cols, int8_t* dst, uint8_t* counts);
ActivationRow copy_activation_row_avx512(const int8_t* src, int64_t cols, int8_t* dst, uint8_t* counts);

// A column with zero activations, and in how many batch rows.
struct ZeroColumn {
  int64_t d;
  uint64_t rows;
};
// part[s] += rows * table[d * slots + s] for each given column (d, rows)
// and s < slots, in u16: the caller keeps every sum below 2^16. table is a
// frame's slot counts (FastFrame::slot_column_nonzeros()).
void add_slot_counts_scalar(const uint8_t* table, int64_t slots, const ZeroColumn* columns, int64_t count,
                            uint16_t* part);
void add_slot_counts_avx2(const uint8_t* table, int64_t slots, const ZeroColumn* columns, int64_t count,
                          uint16_t* part);
void add_slot_counts_avx512(const uint8_t* table, int64_t slots, const ZeroColumn* columns, int64_t count,
                            uint16_t* part);

// Each computes output rows [r0, r1) for all batch rows.
// int8: y[n][r] = sum_d w[r,d]*x[n,d] mod 2^32.
void int8_rows_scalar(const Int8Job& job, int64_t r0, int64_t r1);
void int8_rows_avx2(const Int8Job& job, int64_t r0, int64_t r1);
void int8_rows_avx512(const Int8Job& job, int64_t r0, int64_t r1);
void int8_rows_amx(const Int8Job& job, int64_t r0, int64_t r1);
void zero_hits_scalar(const ZeroCountJob& job, int64_t r0, int64_t r1);
void zero_hits_avx2(const ZeroCountJob& job, int64_t r0, int64_t r1);
void zero_hits_avx512(const ZeroCountJob& job, int64_t r0, int64_t r1);
// fp32: the 16-bank order of reference_engine.h.
void fp32_rows_scalar(const Fp32Job& job, int64_t r0, int64_t r1);
void fp32_rows_avx2(const Fp32Job& job, int64_t r0, int64_t r1);
void fp32_rows_avx512(const Fp32Job& job, int64_t r0, int64_t r1);

// The fixed bank reduction tree (reference_engine.h), shared by every ISA
// (static: each translation unit keeps its own copy, compiled for its ISA).
static inline float reduce_fp_banks(float* b) {
  for (int s = 8; s >= 1; s /= 2)
    for (int j = 0; j < s; ++j) b[j] = b[j] + b[j + s];
  return b[0];
}

}  // namespace tfmbs::fabric::fast_detail
