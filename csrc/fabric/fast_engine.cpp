#include "fabric/fast_engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fabric/fast_engine_kernels.h"
#include "fabric/isa_kernel.h"
#include "fabric/pt5_codec.h"
#include "fabric/reference_engine.h"  // LaneAccumulator
#include "fabric/status.h"
#include "fabric/thread_pool.h"
#include "fabric/zero_plan.h"

namespace tfmbs::fabric {

using fast_detail::Fp32Job;
using fast_detail::Int8Job;
using fast_detail::ZeroCounts;
using fast_detail::ZeroPlan;

namespace {

using fast_detail::FrameCodes;

FrameCodes frame_codes(const FastFrame& w) {
  FrameCodes codes;
  codes.codes = w.codes();
  codes.row_bytes = w.row_bytes();
  codes.blocks = w.blocks_per_row();
  return codes;
}
using Int8Fn = void (*)(const Int8Job&, int64_t, int64_t);
using Fp32Fn = void (*)(const Fp32Job&, int64_t, int64_t);

Int8Fn int8_kernel(Isa isa) {
  return isa == Isa::Amx ? fast_detail::int8_rows_amx
                         : fast_detail::isa_kernel<Int8Fn>(isa, fast_detail::int8_rows_scalar,
                                                           fast_detail::int8_rows_avx2, fast_detail::int8_rows_avx512);
}

Fp32Fn fp32_kernel(Isa isa) {
  return fast_detail::isa_kernel<Fp32Fn>(isa, fast_detail::fp32_rows_scalar, fast_detail::fp32_rows_avx2,
                                         fast_detail::fp32_rows_avx512);
}

// Per-thread scratch that only grows, so a hot loop of calls does not hit
// malloc/mmap (and page faults) every time. 64-byte aligned.
class Scratch {
 public:
  uint8_t* get(size_t bytes) {
    if (buf_.size() < bytes + 64) buf_.resize(bytes + 64);
    auto p = reinterpret_cast<uintptr_t>(buf_.data());
    return buf_.data() + ((64 - (p & 63)) & 63);
  }

 private:
  std::vector<uint8_t> buf_;
};

Scratch& scratch(int which) {
  thread_local Scratch s[5];
  return s[which];
}

using CopyRowFn = fast_detail::ActivationRow (*)(const int8_t*, int64_t, int8_t*, uint8_t*);

CopyRowFn copy_activation_row(Isa isa) {
  return fast_detail::isa_kernel<CopyRowFn>(isa, fast_detail::copy_activation_row_scalar,
                                            fast_detail::copy_activation_row_avx2,
                                            fast_detail::copy_activation_row_avx512);
}

// Zeroed u8 zero counts for n batch rows of cols columns, in the calling
// thread's scratch.
ZeroCounts zero_counts_buffer(int64_t n, int64_t cols, int64_t kp) {
  const int64_t per_chunk = fast_detail::zero_count_rows(cols);
  const int64_t chunks = (n + per_chunk - 1) / per_chunk;
  const size_t bytes = static_cast<size_t>(chunks * kp);
  uint8_t* counts = scratch(1).get(bytes);
  std::memset(counts, 0, bytes);
  return {counts, chunks, kp};
}

// Per-row zero-activation hits of the current call (zeroed; rows entries),
// in the calling thread's scratch: no allocation per call.
uint64_t* zero_hit_buffer(int64_t rows) {
  const size_t bytes = static_cast<size_t>(rows) * sizeof(uint64_t);
  auto* p = reinterpret_cast<uint64_t*>(scratch(2).get(bytes));
  std::memset(p, 0, bytes);
  return p;
}

void check_batch(int64_t n, const char* op) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": batch rows N=" + std::to_string(n) + " must be >= 0");
}

// Counters of a TGEMM (see fast_engine.h), per lane class k = r mod G
// (lane k % 15 of tile k / 15): active_cycles += rows(k) * N * K, MACs(k) =
// N * nnz(k) - zero hits(k), skips += active_cycles - MACs(k). Work per
// call in classes, not rows (this runs on the caller, serially, after every
// call): nnz(k) is the frame's; the zero hits come per class
// (class_zero_hits, ZeroPlan) and/or per row (row_zero_hits, or nullptr).
OpCounters tgemm_counters(const FastFrame& w, int64_t n, const uint64_t* row_zero_hits,
                          std::vector<uint64_t> class_zero_hits, const std::vector<uint8_t>& overflow,
                          uint64_t act_bytes) {
  const int tiles = w.tiles();
  const int64_t rows = w.rows(), cols = w.cols(), classes = static_cast<int64_t>(w.class_nonzeros().size());
  const int64_t passes = lane_major_passes(rows, tiles);
  OpCounters c(tiles);
  const uint64_t steps = static_cast<uint64_t>(passes) * static_cast<uint64_t>(n);
  c.compute_cycles = steps * static_cast<uint64_t>(cols);
  c.burst_wait_cycles = steps * burst_cycles(act_bytes);
  c.cycles = c.compute_cycles + c.burst_wait_cycles;
  class_zero_hits.resize(static_cast<size_t>(classes), 0);
  if (row_zero_hits != nullptr || !overflow.empty()) {
    int64_t k = 0;  // r mod classes, stepped
    for (int64_t r = 0; r < rows; ++r) {
      if (row_zero_hits != nullptr) class_zero_hits[static_cast<size_t>(k)] += row_zero_hits[r];
      if (!overflow.empty() && overflow[static_cast<size_t>(r)]) c.tiles[k / kLanesPerTile].overflow = true;
      if (++k == classes) k = 0;
    }
  }
  const uint64_t per_row = static_cast<uint64_t>(n) * static_cast<uint64_t>(cols);
  uint64_t utilization = 0;
  for (int64_t k = 0; k < classes; ++k) {
    const size_t i = static_cast<size_t>(k);
    const uint64_t macs = static_cast<uint64_t>(n) * w.class_nonzeros()[i] - class_zero_hits[i];
    const int64_t class_rows = rows / classes + (k < rows % classes);
    const uint64_t active = per_row * static_cast<uint64_t>(class_rows);
    c.tiles[k / kLanesPerTile].active_cycles[k % kLanesPerTile] += active;
    c.tiles[k / kLanesPerTile].skips[k % kLanesPerTile] += active - macs;
    utilization += macs;
  }
  c.utilization += utilization;
  return c;
}

// Rows per task: enough work per task to pay for a wake-up, a multiple of
// the kernel's row group (4; kAmxRowGroup for the AMX tiles, kPt5BlockRows
// for the PT-5 rows), and several tasks per thread so a busy core does not
// stall the call.
int64_t rows_per_task(int64_t rows, int64_t work_per_row, int threads, int64_t group = 4) {
  int64_t chunk = (rows + threads * 8 - 1) / (threads * 8);
  const int64_t min_rows = (int64_t{1} << 18) / std::max<int64_t>(1, work_per_row);
  chunk = std::max({chunk, min_rows, group});
  return (chunk + group - 1) / group * group;
}

// Bytes of frames the fast engines have read (all engines and threads): the
// clock by which each frame's last read is dated.
std::atomic<uint64_t> frame_bytes_read{0};

// Whether this call reads the frame's PT-5 rows (FastEngineOptions::Batch1).
bool use_pt5_rows(const FastFrame& w, Isa isa, FastEngineOptions::Batch1 mode, int64_t n) {
  using Mode = FastEngineOptions::Batch1;
  if (n != 1 || w.pt5_rows() == nullptr || isa == Isa::Avx2 || mode == Mode::Codes) return false;
  if (mode == Mode::Pt5) return true;
  // More frame bytes read since this frame's last read than half the
  // last-level cache (which holds other data too: activations, the rest of
  // the program, other processes): its bytes come from DRAM. A frame never
  // read was just built.
  const uint64_t last = w.last_read().load(std::memory_order_relaxed);
  return last != 0 && frame_bytes_read.load(std::memory_order_relaxed) - last > last_level_cache_bytes() / 2;
}

void note_read(const FastFrame& w, bool pt5_rows) {
  const uint64_t bytes = pt5_rows ? w.pt5_bytes() : w.codes_bytes();
  const uint64_t end = frame_bytes_read.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if (w.pt5_rows() != nullptr) w.last_read().store(end, std::memory_order_relaxed);
}

}  // namespace

FastEngine::FastEngine(FastEngineOptions options)
    : isa_(options.isa), batch1_(options.batch1), threads_(options.threads), pool_(options.pool) {
  if (!cpu_supports(isa_))
    throw std::invalid_argument(std::string("FastEngine: isa=") + isa_name(isa_) +
                                " is not supported by this CPU");
  set_threads(options.threads);
}

ThreadPool& FastEngine::pool() const { return pool_ ? *pool_ : ThreadPool::global(); }

int FastEngine::threads() const {
  if (threads_ == 1) return 1;  // never touches (or creates) the pool
  return threads_ == 0 ? pool().threads() : std::min(threads_, pool().threads());
}

void FastEngine::set_threads(int threads) {
  if (threads < 0 || threads > 1024)
    throw std::invalid_argument("FastEngine: threads=" + std::to_string(threads) +
                                " out of range [0, 1024] (0 = all of the pool's)");
  threads_ = threads;
}

OpCounters FastEngine::run_int8(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y,
                                uint64_t act_bytes, const RowsDone* done) const {
  const int64_t rows = w.rows(), cols = w.cols(), kp = w.padded_cols();
  const size_t un = static_cast<size_t>(n), ukp = static_cast<size_t>(kp);
  const bool pt5_rows = use_pt5_rows(w, isa_, batch1_, n);
  note_read(w, pt5_rows);
  // Activations, padded to whole blocks (and zeros past them for the PT-5
  // tables' last pair), and their per-row facts.
  int8_t* xp = reinterpret_cast<int8_t*>(scratch(0).get(un * ukp + 64));
  std::memset(xp + un * ukp, 0, 64);
  std::vector<int32_t> x_sum(un);
  const ZeroCounts zeros = zero_counts_buffer(n, cols, kp);
  const auto copy_row = copy_activation_row(isa_);
  bool may_overflow = false, any_zero = false;
  for (int64_t b = 0; b < n; ++b) {
    const int8_t* src = x + b * cols;
    int8_t* dst = xp + b * kp;
    const fast_detail::ActivationRow facts = copy_row(src, cols, dst, zeros.for_row(b, cols));
    if (kp > cols) std::memset(dst + cols, 0, static_cast<size_t>(kp - cols));
    // |x| <= 128: the lanes' prefix sums can leave int32 only past this K.
    int64_t l1 = 0;
    if (cols > INT32_MAX / 128)
      for (int64_t d = 0; d < cols; ++d) l1 += src[d] < 0 ? -src[d] : src[d];
    any_zero |= facts.has_zero;
    x_sum[static_cast<size_t>(b)] = facts.sum;
    if (l1 > INT32_MAX) may_overflow = true;
  }
  // Without the frame's slot counts, the SIMD codes' kernels count zero hits
  // in the same pass (see Int8Job); otherwise a ZeroPlan does.
  const bool fuse_zeros = any_zero && isa_ != Isa::Scalar && !pt5_rows && w.slots() == 0 && zeros.chunks == 1;
  std::vector<uint8_t> group_has_zero;
  std::vector<int32_t> zero_slices;
  if (fuse_zeros) {
    group_has_zero.assign(static_cast<size_t>(kp / 64), 0);
    for (int64_t s = 0; s < kp / 32; ++s) {
      bool zero = false;
      for (int64_t d = s * 32; d < (s + 1) * 32; ++d) zero |= zeros.counts[d] != 0;
      group_has_zero[static_cast<size_t>(s / 2)] |= zero;
      if (zero) zero_slices.push_back(static_cast<int32_t>(s));
    }
  }
  const ZeroPlan zeros_plan = fuse_zeros || !any_zero ? ZeroPlan() : ZeroPlan(isa_, w, zeros);
  const bool per_row_zeros = fuse_zeros || zeros_plan.per_row();
  uint64_t* zero_hits = per_row_zeros ? zero_hit_buffer(rows) : nullptr;
  std::vector<uint8_t> overflow(may_overflow ? static_cast<size_t>(rows) : 0, 0);
  Int8Job job;
  static_cast<FrameCodes&>(job) = frame_codes(w);
  job.x = xp;
  job.x_stride = kp;
  job.x_sum = x_sum.data();
  job.n = n;
  job.m = rows;
  job.y = y;
  if (fuse_zeros) {
    job.zero_counts = zeros.counts;
    job.group_has_zero = group_has_zero.data();
    job.zero_slices = zero_slices.data();
    job.zero_slice_count = static_cast<int64_t>(zero_slices.size());
    job.zero_hits = zero_hits;
  }
  if (isa_ == Isa::Amx && n >= fast_detail::kAmxMinBatch) {
    auto* tiles = reinterpret_cast<int8_t*>(scratch(3).get(static_cast<size_t>(fast_detail::amx_activation_bytes(n, kp))));
    fast_detail::amx_pack_activations(xp, kp, n, kp, tiles);
    job.x_tiles = tiles;
  }
  const Int8Fn kernel = int8_kernel(isa_);
  fast_detail::Pt5Job pt5_job;
  uint64_t pt5_call = 0;
  if (pt5_rows) {
    pt5_job.blocks = w.pt5_rows();
    pt5_job.block_bytes = w.pt5_block_bytes();
    pt5_job.pairs = w.pt5_pairs();
    pt5_job.x_sum = x_sum[0];
    pt5_job.m = rows;
    pt5_job.y = y;
    static std::atomic<uint64_t> pt5_calls{0};
    pt5_call = pt5_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  const bool scalar = isa_ == Isa::Scalar;
  const auto pt5_tables = scalar ? fast_detail::pt5_tables_scalar : fast_detail::pt5_tables_avx512;
  const auto pt5_kernel = scalar ? fast_detail::pt5_rows_scalar : fast_detail::pt5_rows_avx512;
  // Each thread builds the tables it reads, once per call, in its own
  // scratch: built by another thread, they would come over from that
  // core's cache line by line.
  auto run_pt5 = [&](int64_t r0, int64_t r1) {
    thread_local uint64_t tables_call = 0;
    const size_t bytes = static_cast<size_t>(fast_detail::pt5_table_entries(pt5_job.pairs)) * sizeof(int16_t);
    auto* tables = reinterpret_cast<int16_t*>(scratch(4).get(bytes));
    if (tables_call != pt5_call) {
      pt5_tables(xp, pt5_job.pairs, tables);
      tables_call = pt5_call;
    }
    fast_detail::Pt5Job here = pt5_job;
    here.tables = tables;
    pt5_kernel(here, r0, r1);
  };

  auto run_rows = [&](int64_t r0, int64_t r1) {
    if (pt5_rows) run_pt5(r0, r1);
    else if (n > 0) kernel(job, r0, r1);
    zeros_plan.count(isa_, job, r0, r1, zero_hits);
    if (may_overflow) {
      // Replay the reference's sequential accumulation for the rows whose
      // prefix sums can leave int32 (only the flag is needed: wrapping
      // results are order-independent).
      for (int64_t b = 0; b < n; ++b) {
        const int8_t* xr = x + b * cols;
        int64_t l1 = 0;
        for (int64_t d = 0; d < cols; ++d) l1 += xr[d] < 0 ? -xr[d] : xr[d];
        if (l1 <= INT32_MAX) continue;
        for (int64_t r = r0; r < r1; ++r) {
          if (w.row_nonzeros()[static_cast<size_t>(r)] == 0) continue;
          LaneAccumulator acc;
          for (int64_t d = 0; d < cols; ++d) {
            const int wv = w.trit(r, d);
            if (wv != 0 && xr[d] != 0) acc.add(wv > 0 ? xr[d] : -static_cast<int64_t>(xr[d]));
          }
          if (acc.overflow) overflow[static_cast<size_t>(r)] = 1;
        }
      }
    }
    if (done) (*done)(r0, r1);
  };

  const int nthreads = threads();
  const int64_t chunk = rows_per_task(rows, std::max<int64_t>(1, kp * n), nthreads,
                                      pt5_rows ? kPt5BlockRows : job.x_tiles ? fast_detail::kAmxRowGroup : 4);
  const int64_t tasks = (rows + chunk - 1) / chunk;
  if (nthreads <= 1 || tasks <= 1) {
    run_rows(0, rows);
  } else {
    pool().parallel_for(
        tasks, [&](int64_t i) { run_rows(i * chunk, std::min(rows, (i + 1) * chunk)); }, nthreads);
  }

  return tgemm_counters(w, n, zero_hits, zeros_plan.class_hits(), overflow, act_bytes);
}

OpCounters FastEngine::tgemm_int8(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y,
                                  const RowsDone* done) const {
  check_batch(n, "tgemm_int8");
  return run_int8(w, x, n, y, static_cast<uint64_t>(w.cols()), done);
}

OpCounters FastEngine::tgemm_ternary(const FastFrame& w, const int8_t* x, int64_t n, int32_t* y,
                                     const RowsDone* done) const {
  check_batch(n, "tgemm_ternary");
  for (int64_t i = 0; i < n * w.cols(); ++i) {
    if (x[i] < -1 || x[i] > 1)
      throw FabricError(Status::ErrPack, "tgemm ternary activations: element " + std::to_string(i) +
                                             " is " + std::to_string(x[i]) + "; ternary values are -1, 0, 1");
  }
  return run_int8(w, x, n, y, pt5::packed_size(static_cast<size_t>(w.cols())), done);
}

OpCounters FastEngine::tgemm_fp32(const FastFrame& w, const float* x, int64_t n, float* y,
                                  const RowsDone* done) const {
  check_batch(n, "tgemm_fp32");
  note_read(w, false);
  const int64_t rows = w.rows(), cols = w.cols(), kp = w.padded_cols();
  const size_t un = static_cast<size_t>(n), ukp = static_cast<size_t>(kp);
  float* xp = reinterpret_cast<float*>(scratch(0).get(un * ukp * sizeof(float)));
  bool all_finite = true, any_zero = false;
  const ZeroCounts zeros = zero_counts_buffer(n, cols, kp);
  for (int64_t b = 0; b < n; ++b) {
    if (cols > 0) std::memcpy(xp + b * kp, x + b * cols, static_cast<size_t>(cols) * sizeof(float));
    std::fill(xp + b * kp + cols, xp + (b + 1) * kp, 0.0f);
    uint8_t* counts = zeros.for_row(b, cols);
    for (int64_t d = 0; d < cols; ++d) {
      const float v = x[b * cols + d];
      all_finite &= std::isfinite(v);
      counts[d] = static_cast<uint8_t>(counts[d] + (v == 0.0f));
      any_zero |= v == 0.0f;
    }
  }
  const ZeroPlan zeros_plan = any_zero ? ZeroPlan(isa_, w, zeros) : ZeroPlan();
  uint64_t* zero_hits = zeros_plan.per_row() ? zero_hit_buffer(rows) : nullptr;
  Fp32Job job;
  static_cast<FrameCodes&>(job) = frame_codes(w);
  job.x = xp;
  job.x_stride = kp;
  job.n = n;
  job.m = rows;
  job.y = y;
  job.all_finite = all_finite;
  const Fp32Fn kernel = fp32_kernel(isa_);
  auto run_rows = [&](int64_t r0, int64_t r1) {
    if (n > 0) kernel(job, r0, r1);
    zeros_plan.count(isa_, job, r0, r1, zero_hits);
    if (done) (*done)(r0, r1);
  };
  const int nthreads = threads();
  const int64_t chunk = rows_per_task(rows, std::max<int64_t>(1, kp * n * 4), nthreads);
  const int64_t tasks = (rows + chunk - 1) / chunk;
  if (nthreads <= 1 || tasks <= 1) {
    run_rows(0, rows);
  } else {
    pool().parallel_for(
        tasks, [&](int64_t i) { run_rows(i * chunk, std::min(rows, (i + 1) * chunk)); }, nthreads);
  }
  return tgemm_counters(w, n, zero_hits, zeros_plan.class_hits(), {}, 4 * static_cast<uint64_t>(cols));
}

namespace {

enum class Elementwise { Dot, Add, Mul };

OpCounters run_elementwise(Elementwise kind, const uint8_t* pa, const uint8_t* pb, int64_t n,
                           int tiles, int64_t* dot_out, uint8_t* out) {
  if (n < 0 || n > INT32_MAX)
    throw std::invalid_argument("elementwise kernel: n=" + std::to_string(n) + " out of range [0, 2147483647]");
  if (tiles < 1 || tiles > 255)
    throw std::invalid_argument("elementwise kernel: tiles=" + std::to_string(tiles) + " out of range [1, 255]");
  const size_t un = static_cast<size_t>(n);
  std::vector<int8_t> a(un), b(un), o(kind == Elementwise::Dot ? 0 : un);
  pt5::decode(pa, un, a.data());
  pt5::decode(pb, un, b.data());
  const int64_t group = int64_t{kLanesPerTile} * tiles;
  OpCounters c(tiles);
  c.burst_wait_cycles = burst_cycles(2 * pt5::packed_size(un));
  c.compute_cycles = static_cast<uint64_t>((n + group - 1) / group);
  c.cycles = c.compute_cycles + c.burst_wait_cycles;
  // Lane g holds elements g, g+G, ...: ceil((n - g) / G) of them.
  std::vector<uint64_t> lane_skips(static_cast<size_t>(group), 0);
  int64_t g = 0;
  int64_t dot = 0;
  for (size_t i = 0; i < un; ++i) {
    const int av = a[i], bv = b[i];
    lane_skips[static_cast<size_t>(g)] += (av == 0) | (bv == 0);
    if (++g == group) g = 0;
    switch (kind) {
      case Elementwise::Dot: dot += av * bv; break;
      case Elementwise::Mul: o[i] = static_cast<int8_t>(av * bv); break;
      case Elementwise::Add: o[i] = static_cast<int8_t>(std::clamp(av + bv, -1, 1)); break;
    }
  }
  uint64_t skips = 0;
  for (int64_t lane = 0; lane < group; ++lane) {
    const int t = static_cast<int>(lane / kLanesPerTile), l = static_cast<int>(lane % kLanesPerTile);
    const uint64_t active = lane < n ? static_cast<uint64_t>((n - lane + group - 1) / group) : 0;
    c.tiles[t].active_cycles[l] = active;
    c.tiles[t].skips[l] = lane_skips[static_cast<size_t>(lane)];
    skips += lane_skips[static_cast<size_t>(lane)];
  }
  c.utilization = un - skips;
  // A lane's accumulator holds at most ceil(n / G) <= 2^31 - 1 unit steps,
  // so DOT cannot set an overflow flag; ADD and MUL produce trits.
  if (kind == Elementwise::Dot) *dot_out = dot;
  else pt5::encode(o.data(), un, out);
  return c;
}

}  // namespace

OpCounters FastEngine::dot(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, int64_t* result) const {
  return run_elementwise(Elementwise::Dot, a, b, n, tiles, result, nullptr);
}
OpCounters FastEngine::add(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) const {
  return run_elementwise(Elementwise::Add, a, b, n, tiles, nullptr, out);
}
OpCounters FastEngine::mul(const uint8_t* a, const uint8_t* b, int64_t n, int tiles, uint8_t* out) const {
  return run_elementwise(Elementwise::Mul, a, b, n, tiles, nullptr, out);
}

}  // namespace tfmbs::fabric
