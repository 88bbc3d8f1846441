#include "aten/native/SlidingWindowAttention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "aten/native/Common.h"
#include "fabric/attention_kernels.h"

// torch's CPU build exports its BLAS's sgemm (MKL in the wheel): the routine
// at::native::cpublas::gemm calls for float, whose own symbol is not exported.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c, const int* ldc);
// MKL's per-thread thread count (absent from other BLAS builds: weak). torch
// turns MKL's dynamic threading off, so a GEMM called inside at::parallel_for
// would open a nested OpenMP team per call.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace tfmbs {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
// Queries x keys per tile: a 64 x 64 score tile and the tiles of q, k, v and
// the output it touches stay in L2; a band of window w costs at most
// (64 + w - 1) / w times its own work.
constexpr int64_t kQueryTile = 64, kKeyTile = 64;

// Row-major c[m x n] = alpha * op(a) . op(b) + beta * c with op(x) = x^T
// where x_t; leading dimensions in elements. BLAS is column-major, so it
// computes c^T = op(b)^T . op(a)^T.
void gemm(bool a_t, bool b_t, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const char ta = b_t ? 'T' : 'N', tb = a_t ? 'T' : 'N';
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(std::max<int64_t>(1, ldb));
  const int LDB = static_cast<int>(std::max<int64_t>(1, lda));
  const int LDC = static_cast<int>(std::max<int64_t>(1, ldc));
  sgemm_(&ta, &tb, &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
}

// The keys query i sees: first..last.
std::pair<int64_t, int64_t> keys_of(int64_t i, int64_t length, int64_t window, bool causal) {
  const int64_t first = std::max<int64_t>(0, i - window + 1);
  const int64_t last = causal ? i : std::min<int64_t>(length - 1, i + window - 1);
  return {first, last};
}

// The queries that see key j: first..last.
std::pair<int64_t, int64_t> queries_of(int64_t j, int64_t length, int64_t window, bool causal) {
  const int64_t first = causal ? j : std::max<int64_t>(0, j - window + 1);
  return {first, std::min<int64_t>(length - 1, j + window - 1)};
}

at::Tensor as_float(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

// The extra mask as float32 scores (bool: 0 where True, -inf where False)
// expanded to [B, Hq, L, L] (broadcast dimensions have stride 0).
struct ExtraMask {
  at::Tensor scores;
  const float* data = nullptr;
  std::array<int64_t, 4> stride{};

  ExtraMask(const std::optional<at::Tensor>& mask, const at::Tensor& q) {
    if (!mask) return;
    scores = mask->scalar_type() == at::kBool
                 ? at::zeros(mask->sizes(), q.options().dtype(at::kFloat)).masked_fill_(mask->logical_not(), -kInf)
                 : mask->to(at::kFloat);
    scores = scores.expand({q.size(0), q.size(1), q.size(2), q.size(2)});
    data = scores.const_data_ptr<float>();
    for (int d = 0; d < 4; ++d) stride[d] = scores.stride(d);
  }
  const float* row(int64_t b, int64_t h, int64_t i) const {
    return data + b * stride[0] + h * stride[1] + i * stride[2];
  }
};

// What every tile reads: the float32 inputs and the problem's shape.
struct Problem {
  int64_t batch, q_heads, kv_heads, length, head_dim, window;
  bool causal;
  float scale;
  const float *q, *k, *v;
  const ExtraMask& mask;

  int64_t group() const { return q_heads / kv_heads; }
  // Offset of row i of query head h (and of out, grad_out, logsumexp).
  int64_t q_row(int64_t b, int64_t h, int64_t i) const { return (b * q_heads + h) * length + i; }
  // Offset of row j of the kv head query head h reads.
  int64_t kv_row(int64_t b, int64_t h, int64_t j) const {
    return (b * kv_heads + h / group()) * length + j;
  }
};

Problem problem_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                   bool causal, std::optional<double> scale, const ExtraMask& mask) {
  const int64_t D = q.size(3);
  return {q.size(0), q.size(1), k.size(1), q.size(2), D, window, causal,
          scale ? static_cast<float>(*scale) : 1.0f / std::sqrt(static_cast<float>(D)),
          q.const_data_ptr<float>(), k.const_data_ptr<float>(), v.const_data_ptr<float>(), mask};
}

// s[r][c] = scale * q_{i0+r} . k_{j0+c} + mask, for qn x kn queries and
// keys of head h; -inf where key j0+c is outside query i0+r's window.
void score_tile(const Problem& p, int64_t b, int64_t h, int64_t i0, int64_t qn, int64_t j0,
                int64_t kn, float* s) {
  const int64_t D = p.head_dim;
  gemm(false, true, qn, kn, D, p.scale, p.q + p.q_row(b, h, i0) * D, D, p.k + p.kv_row(b, h, j0) * D,
       D, 0.0f, s, kn);
  for (int64_t r = 0; r < qn; ++r) {
    const auto [first, last] = keys_of(i0 + r, p.length, p.window, p.causal);
    const int64_t lo = std::clamp<int64_t>(first - j0, 0, kn);
    const int64_t hi = std::clamp<int64_t>(last - j0 + 1, lo, kn);
    float* row = s + r * kn;
    std::fill(row, row + lo, -kInf);
    std::fill(row + hi, row + kn, -kInf);
    if (p.mask.data) {
      const float* m = p.mask.row(b, h, i0 + r) + j0 * p.mask.stride[3];
      for (int64_t c = lo; c < hi; ++c) row[c] += m[c * p.mask.stride[3]];
    }
  }
}

// Turns the score tile into probabilities exp(s - logsumexp) in place.
void probabilities(const fabric::AttentionKernels& kernels, float* s, int64_t qn, int64_t kn,
                   const float* lse) {
  for (int64_t r = 0; r < qn; ++r) {
    float* row = s + r * kn;
    if (lse[r] == -kInf) {
      std::fill(row, row + kn, 0.0f);  // a row that sees no key
    } else {
      kernels.exp_sum(row, kn, lse[r]);
    }
  }
}

// ds = p * (dp - delta) in place of dp: the gradient of the scores.
void score_grads(const float* p, float* dp, int64_t qn, int64_t kn, const float* delta) {
  for (int64_t r = 0; r < qn; ++r) {
    for (int64_t c = 0; c < kn; ++c) dp[r * kn + c] = p[r * kn + c] * (dp[r * kn + c] - delta[r]);
  }
}

// The output rows i0.. of head h, accumulated in place in `out`, with the
// online softmax over the key tiles of the rows' windows.
void forward_tile(const Problem& p, const fabric::AttentionKernels& kernels, int64_t b, int64_t h,
                  int64_t i0, float* out, float* lse, std::vector<float>& s) {
  const int64_t D = p.head_dim, qn = std::min(kQueryTile, p.length - i0);
  const int64_t first = keys_of(i0, p.length, p.window, p.causal).first;
  const int64_t last = keys_of(i0 + qn - 1, p.length, p.window, p.causal).second;
  float* o = out + p.q_row(b, h, i0) * D;
  float* row_max = lse + p.q_row(b, h, i0);
  std::fill(o, o + qn * D, 0.0f);
  std::fill(row_max, row_max + qn, -kInf);
  std::array<float, kQueryTile> sum{};
  for (int64_t j0 = first; j0 <= last; j0 += kKeyTile) {
    const int64_t kn = std::min(kKeyTile, last + 1 - j0);
    score_tile(p, b, h, i0, qn, j0, kn, s.data());
    for (int64_t r = 0; r < qn; ++r) {
      float* row = s.data() + r * kn;
      const float new_max = std::max(row_max[r], *std::max_element(row, row + kn));
      if (new_max == -kInf) {  // nothing seen yet: the tile adds nothing
        std::fill(row, row + kn, 0.0f);
        continue;
      }
      const float rescale = row_max[r] == -kInf ? 0.0f : std::exp(row_max[r] - new_max);
      sum[r] = sum[r] * rescale + kernels.exp_sum(row, kn, new_max);
      if (rescale != 1.0f) {
        for (int64_t d = 0; d < D; ++d) o[r * D + d] *= rescale;
      }
      row_max[r] = new_max;
    }
    gemm(false, false, qn, D, kn, 1.0f, s.data(), kn, p.v + p.kv_row(b, h, j0) * D, D, 1.0f, o, D);
  }
  for (int64_t r = 0; r < qn; ++r) {
    const float inv = sum[r] > 0.0f ? 1.0f / sum[r] : 0.0f;
    for (int64_t d = 0; d < D; ++d) o[r * D + d] *= inv;
    row_max[r] = sum[r] > 0.0f ? row_max[r] + std::log(sum[r]) : -kInf;  // now the log-sum-exp
  }
}

int64_t tiles(int64_t n, int64_t tile) { return (n + tile - 1) / tile; }

// at::parallel_for whose chunks call the BLAS single-threaded: the tiles are
// the parallelism.
template <typename Body>
void parallel_tiles(int64_t count, const Body& body) {
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    const int previous = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0;
    body(begin, end);
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous);
  });
}

}  // namespace

void check_sliding_window_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t window, const std::optional<at::Tensor>& mask) {
  const char* op = "tfmbs.sliding_window_attention: ";
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              "q, k and v must be 4-D [batch, heads, length, head_dim], got ", q.sizes(), ", ",
              k.sizes(), " and ", v.sizes());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              "q, k and v must have one dtype, got ", q.scalar_type(), ", ", k.scalar_type(), " and ",
              v.scalar_type());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()) && q.scalar_type() != at::kDouble, op,
              "expected float32, bfloat16 or float16 inputs, got ", q.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), op,
              "q, k and v must be on one device, got ", q.device(), ", ", k.device(), " and ", v.device());
  TORCH_CHECK(k.sizes() == v.sizes(), op, "k and v must have one shape, got ", k.sizes(), " and ",
              v.sizes());
  TORCH_CHECK(q.size(3) == k.size(3), op, "q's head_dim (", q.size(3), ") differs from k's (",
              k.size(3), ")");
  TORCH_CHECK(q.size(0) == k.size(0), op, "q's batch (", q.size(0), ") differs from k's (",
              k.size(0), ")");
  TORCH_CHECK(q.size(2) == k.size(2), op, "q's length (", q.size(2), ") differs from k's (",
              k.size(2), "): the window is defined for self-attention");
  TORCH_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, op, "q's heads (", q.size(1),
              ") must be a multiple of k's (", k.size(1), ")");
  TORCH_CHECK(window >= 1, op, "window must be >= 1, got ", window);
  if (!mask) return;
  TORCH_CHECK(mask->device() == q.device(), op, "attn_mask must be on q's device ", q.device(),
              ", got ", mask->device());
  TORCH_CHECK(mask->scalar_type() == at::kBool || mask->scalar_type() == q.scalar_type(), op,
              "attn_mask must be bool or q's dtype ", q.scalar_type(), ", got ", mask->scalar_type());
  const std::array<int64_t, 4> want{q.size(0), q.size(1), q.size(2), q.size(2)};
  bool broadcasts = mask->dim() <= 4;
  for (int64_t d = 1; broadcasts && d <= mask->dim(); ++d) {
    const int64_t size = mask->size(-d);
    broadcasts = size == 1 || size == want[4 - d];
  }
  TORCH_CHECK(broadcasts, op, "attn_mask of shape ", mask->sizes(),
              " does not broadcast to [batch, q_heads, length, length] = ", c10::IntArrayRef(want));
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, int64_t window,
    bool causal, std::optional<double> scale, const std::optional<at::Tensor>& mask_in) {
  check_sliding_window_args(q_in, k_in, v_in, window, mask_in);
  const at::Tensor q = as_float(q_in), k = as_float(k_in), v = as_float(v_in);
  const ExtraMask mask(mask_in, q);
  const Problem p = problem_of(q, k, v, window, causal, scale, mask);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({p.batch, p.q_heads, p.length}, q.options());
  const fabric::AttentionKernels& kernels = fabric::best_attention_kernels();
  float* op = out.mutable_data_ptr<float>();
  float* lp = lse.mutable_data_ptr<float>();
  const int64_t q_tiles = tiles(p.length, kQueryTile);
  parallel_tiles(p.batch * p.q_heads * q_tiles, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kQueryTile * kKeyTile);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / q_tiles;
      forward_tile(p, kernels, bh / p.q_heads, bh % p.q_heads, (task % q_tiles) * kQueryTile, op, lp, s);
    }
  });
  return {out.to(q_in.scalar_type()), lse};
}

SlidingWindowGrads sliding_window_attention_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in, int64_t window,
    bool causal, std::optional<double> scale, const std::optional<at::Tensor>& mask_in,
    bool mask_grad) {
  check_sliding_window_args(q_in, k_in, v_in, window, mask_in);
  TORCH_CHECK(grad_out_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(),
              "tfmbs.sliding_window_attention backward: grad_out and out must have q's shape ",
              q_in.sizes());
  const at::Tensor q = as_float(q_in), k = as_float(k_in), v = as_float(v_in);
  const at::Tensor grad_out = as_float(grad_out_in), lse = as_float(lse_in);
  const ExtraMask mask(mask_in, q);
  const Problem p = problem_of(q, k, v, window, causal, scale, mask);
  const int64_t D = p.head_dim, L = p.length;
  // delta_i = grad_out_i . out_i: the softmax's backward term of each row.
  const at::Tensor delta = (grad_out * out_in.to(at::kFloat)).sum(-1);
  at::Tensor grad_q = at::zeros(q.sizes(), q.options());
  at::Tensor grad_k = at::zeros(k.sizes(), k.options());
  at::Tensor grad_v = at::zeros(v.sizes(), v.options());
  at::Tensor grad_scores = mask_grad ? at::zeros({p.batch, p.q_heads, L, L}, q.options())
                                     : at::empty({0}, q.options());
  const fabric::AttentionKernels& kernels = fabric::best_attention_kernels();
  const float* go = grad_out.const_data_ptr<float>();
  const float* lp = lse.const_data_ptr<float>();
  const float* dp = delta.const_data_ptr<float>();
  float* gq = grad_q.mutable_data_ptr<float>();
  float* gk = grad_k.mutable_data_ptr<float>();
  float* gv = grad_v.mutable_data_ptr<float>();
  float* gs = mask_grad ? grad_scores.mutable_data_ptr<float>() : nullptr;

  // Key and value gradients: one task per kv head and key tile, its only
  // writer; it walks the query tiles of every query head of its group.
  const int64_t k_tiles = tiles(L, kKeyTile);
  parallel_tiles(p.batch * p.kv_heads * k_tiles, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kQueryTile * kKeyTile), ds(kQueryTile * kKeyTile);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bg = task / k_tiles, j0 = (task % k_tiles) * kKeyTile;
      const int64_t b = bg / p.kv_heads, kn = std::min(kKeyTile, L - j0);
      const int64_t first = queries_of(j0, L, window, causal).first;
      const int64_t last = queries_of(j0 + kn - 1, L, window, causal).second;
      const int64_t kv = p.kv_row(b, (bg % p.kv_heads) * p.group(), j0);
      for (int64_t h = (bg % p.kv_heads) * p.group(); h < (bg % p.kv_heads + 1) * p.group(); ++h) {
        for (int64_t i0 = first; i0 <= last; i0 += kQueryTile) {
          const int64_t qn = std::min(kQueryTile, last + 1 - i0), row = p.q_row(b, h, i0);
          score_tile(p, b, h, i0, qn, j0, kn, s.data());
          probabilities(kernels, s.data(), qn, kn, lp + row);
          gemm(true, false, kn, D, qn, 1.0f, s.data(), kn, go + row * D, D, 1.0f, gv + kv * D, D);
          gemm(false, true, qn, kn, D, 1.0f, go + row * D, D, p.v + kv * D, D, 0.0f, ds.data(), kn);
          score_grads(s.data(), ds.data(), qn, kn, dp + row);
          if (gs) {
            for (int64_t r = 0; r < qn; ++r) {
              std::copy(ds.data() + r * kn, ds.data() + (r + 1) * kn, gs + (row + r) * L + j0);
            }
          }
          gemm(true, false, kn, D, qn, p.scale, ds.data(), kn, p.q + row * D, D, 1.0f, gk + kv * D, D);
        }
      }
    }
  });
  // Query gradients: one task per query tile, over the key tiles of its
  // rows' windows, as the forward.
  const int64_t q_tiles = tiles(L, kQueryTile);
  parallel_tiles(p.batch * p.q_heads * q_tiles, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kQueryTile * kKeyTile), ds(kQueryTile * kKeyTile);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / q_tiles, i0 = (task % q_tiles) * kQueryTile;
      const int64_t b = bh / p.q_heads, h = bh % p.q_heads, qn = std::min(kQueryTile, L - i0);
      const int64_t row = p.q_row(b, h, i0);
      const int64_t first = keys_of(i0, L, window, causal).first;
      const int64_t last = keys_of(i0 + qn - 1, L, window, causal).second;
      for (int64_t j0 = first; j0 <= last; j0 += kKeyTile) {
        const int64_t kn = std::min(kKeyTile, last + 1 - j0), kv = p.kv_row(b, h, j0);
        score_tile(p, b, h, i0, qn, j0, kn, s.data());
        probabilities(kernels, s.data(), qn, kn, lp + row);
        gemm(false, true, qn, kn, D, 1.0f, go + row * D, D, p.v + kv * D, D, 0.0f, ds.data(), kn);
        score_grads(s.data(), ds.data(), qn, kn, dp + row);
        gemm(false, false, qn, D, kn, p.scale, ds.data(), kn, p.k + kv * D, D, 1.0f, gq + row * D, D);
      }
    }
  });
  return {grad_q.to(q_in.scalar_type()), grad_k.to(k_in.scalar_type()), grad_v.to(v_in.scalar_type()),
          grad_scores};
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_tfmbs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask) {
  check_sliding_window_args(q, k, v, window, mask);
  return run_on_host(q.device().index(), [&] {
    return sliding_window_attention_cpu(cpu_alias(q), cpu_alias(k), cpu_alias(v), window, causal, scale,
                                        mask ? std::optional(cpu_alias(*mask)) : std::nullopt);
  });
}

SlidingWindowGrads sliding_window_attention_backward_tfmbs(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale, const std::optional<at::Tensor>& mask, bool mask_grad) {
  check_sliding_window_args(q, k, v, window, mask);
  for (const at::Tensor* t : {&grad_out, &out, &logsumexp}) {
    TORCH_CHECK(t->device() == q.device(), "tfmbs.sliding_window_attention backward: expected all "
                "tensors on ", q.device(), ", got one on ", t->device());
  }
  return run_on_host(q.device().index(), [&] {
    return sliding_window_attention_backward_cpu(
        cpu_alias(grad_out), cpu_alias(q), cpu_alias(k), cpu_alias(v), cpu_alias(out),
        cpu_alias(logsumexp), window, causal, scale,
        mask ? std::optional(cpu_alias(*mask)) : std::nullopt, mask_grad);
  });
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool,
    std::optional<double>, const std::optional<at::Tensor>& mask) {
  check_sliding_window_args(q, k, v, window, mask);
  return {at::empty(q.sizes(), q.options()),
          at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat))};
}

SlidingWindowGrads sliding_window_attention_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor&, const at::Tensor&, int64_t window, bool, std::optional<double>,
    const std::optional<at::Tensor>& mask, bool mask_grad) {
  check_sliding_window_args(q, k, v, window, mask);
  const auto f32 = q.options().dtype(at::kFloat);
  return {at::empty(q.sizes(), q.options()), at::empty(k.sizes(), k.options()),
          at::empty(v.sizes(), v.options()),
          mask_grad ? at::empty({q.size(0), q.size(1), q.size(2), q.size(2)}, f32) : at::empty({0}, f32)};
}

}  // namespace tfmbs
