#include "aten/native/SlidingWindowAttention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "aten/native/Common.h"
#include "fabric/attention_kernels.h"

namespace tfmbs {
namespace {

struct Shape {
  int64_t batch, q_heads, kv_heads, length, head_dim;
  int64_t group() const { return q_heads / kv_heads; }
};

Shape shape_of(const at::Tensor& q, const at::Tensor& k) {
  return {q.size(0), q.size(1), k.size(1), q.size(2), q.size(3)};
}

// The keys query i sees: first..last.
std::pair<int64_t, int64_t> keys_of(int64_t i, int64_t length, int64_t window, bool causal) {
  const int64_t first = std::max<int64_t>(0, i - window + 1);
  const int64_t last = causal ? i : std::min<int64_t>(length - 1, i + window - 1);
  return {first, last};
}

float scale_of(std::optional<double> scale, int64_t head_dim) {
  return scale ? static_cast<float>(*scale) : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

at::Tensor as_float(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

// scores[j - first] = scale * q . k_j for the keys of query i; returns their count.
int64_t window_scores(const fabric::AttentionKernels& kernels, const float* q, const float* k,
                      int64_t i, const Shape& s, int64_t window, bool causal, float scale,
                      float* scores, int64_t& first) {
  int64_t last;
  std::tie(first, last) = keys_of(i, s.length, window, causal);
  for (int64_t j = first; j <= last; ++j) {
    scores[j - first] = scale * kernels.dot(q, k + j * s.head_dim, s.head_dim);
  }
  return last - first + 1;
}

}  // namespace

void check_sliding_window_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t window) {
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
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, int64_t window,
    bool causal, std::optional<double> scale_opt) {
  check_sliding_window_args(q_in, k_in, v_in, window);
  const Shape s = shape_of(q_in, k_in);
  const float scale = scale_of(scale_opt, s.head_dim);
  const at::Tensor q = as_float(q_in), k = as_float(k_in), v = as_float(v_in);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({s.batch, s.q_heads, s.length}, q.options());
  const fabric::AttentionKernels& kernels = fabric::best_attention_kernels();
  const int64_t max_keys = std::min(s.length, 2 * window - 1);
  const int64_t rows = s.batch * s.q_heads * s.length;
  const float* qp = q.const_data_ptr<float>();
  const float* kp = k.const_data_ptr<float>();
  const float* vp = v.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  float* lp = lse.mutable_data_ptr<float>();
  const int64_t D = s.head_dim, L = s.length;
  at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, max_keys * D)),
                   [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(max_keys));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row % L, bh = row / L;
      const int64_t b = bh / s.q_heads, h = bh % s.q_heads;
      const int64_t kv = b * s.kv_heads + h / s.group();
      const float* keys = kp + kv * L * D;
      const float* values = vp + kv * L * D;
      int64_t first = 0;
      const int64_t n =
          window_scores(kernels, qp + row * D, keys, i, s, window, causal, scale, scores.data(), first);
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) max = std::max(max, scores[j]);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) sum += scores[j] = std::exp(scores[j] - max);
      float* o = op + row * D;
      std::fill(o, o + D, 0.0f);
      for (int64_t j = 0; j < n; ++j) kernels.axpy(scores[j] / sum, values + (first + j) * D, o, D);
      lp[row] = max + std::log(sum);
    }
  });
  return {out.to(q_in.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in, int64_t window,
    bool causal, std::optional<double> scale_opt) {
  check_sliding_window_args(q_in, k_in, v_in, window);
  TORCH_CHECK(grad_out_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(),
              "tfmbs.sliding_window_attention backward: grad_out and out must have q's shape ",
              q_in.sizes());
  const Shape s = shape_of(q_in, k_in);
  const float scale = scale_of(scale_opt, s.head_dim);
  const at::Tensor q = as_float(q_in), k = as_float(k_in), v = as_float(v_in);
  const at::Tensor grad_out = as_float(grad_out_in), out = as_float(out_in), lse = as_float(lse_in);
  at::Tensor grad_q = at::zeros(q.sizes(), q.options());
  at::Tensor grad_k = at::zeros(k.sizes(), k.options());
  at::Tensor grad_v = at::zeros(v.sizes(), v.options());
  const fabric::AttentionKernels& kernels = fabric::best_attention_kernels();
  const int64_t D = s.head_dim, L = s.length;
  const int64_t max_keys = std::min(L, 2 * window - 1);
  const float* qp = q.const_data_ptr<float>();
  const float* kp = k.const_data_ptr<float>();
  const float* vp = v.const_data_ptr<float>();
  const float* gop = grad_out.const_data_ptr<float>();
  const float* outp = out.const_data_ptr<float>();
  const float* lp = lse.const_data_ptr<float>();
  float* gq = grad_q.mutable_data_ptr<float>();
  float* gk = grad_k.mutable_data_ptr<float>();
  float* gv = grad_v.mutable_data_ptr<float>();
  // One kv head per task: the query heads of its group are the only
  // writers of its key and value gradients.
  at::parallel_for(0, s.batch * s.kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(static_cast<size_t>(max_keys));
    for (int64_t kv = begin; kv < end; ++kv) {
      const int64_t b = kv / s.kv_heads, g = kv % s.kv_heads;
      const float* keys = kp + kv * L * D;
      const float* values = vp + kv * L * D;
      for (int64_t h = g * s.group(); h < (g + 1) * s.group(); ++h) {
        for (int64_t i = 0; i < L; ++i) {
          const int64_t row = (b * s.q_heads + h) * L + i;
          const float* qi = qp + row * D;
          const float* doi = gop + row * D;
          int64_t first = 0;
          const int64_t n = window_scores(kernels, qi, keys, i, s, window, causal, scale, p.data(), first);
          const float delta = kernels.dot(doi, outp + row * D, D);
          for (int64_t j = 0; j < n; ++j) {
            const int64_t key = first + j;
            const float prob = std::exp(p[j] - lp[row]);
            kernels.axpy(prob, doi, gv + (kv * L + key) * D, D);
            const float ds = prob * (kernels.dot(doi, values + key * D, D) - delta) * scale;
            kernels.axpy(ds, keys + key * D, gq + row * D, D);
            kernels.axpy(ds, qi, gk + (kv * L + key) * D, D);
          }
        }
      }
    }
  });
  return {grad_q.to(q_in.scalar_type()), grad_k.to(k_in.scalar_type()), grad_v.to(v_in.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_tfmbs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool causal,
    std::optional<double> scale) {
  check_sliding_window_args(q, k, v, window);
  return run_on_host(q.device().index(), [&] {
    return sliding_window_attention_cpu(cpu_alias(q), cpu_alias(k), cpu_alias(v), window, causal, scale);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_tfmbs(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& logsumexp, int64_t window, bool causal,
    std::optional<double> scale) {
  check_sliding_window_args(q, k, v, window);
  for (const at::Tensor* t : {&grad_out, &out, &logsumexp}) {
    TORCH_CHECK(t->device() == q.device(), "tfmbs.sliding_window_attention backward: expected all "
                "tensors on ", q.device(), ", got one on ", t->device());
  }
  return run_on_host(q.device().index(), [&] {
    return sliding_window_attention_backward_cpu(cpu_alias(grad_out), cpu_alias(q), cpu_alias(k),
                                                 cpu_alias(v), cpu_alias(out), cpu_alias(logsumexp),
                                                 window, causal, scale);
  });
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, bool,
    std::optional<double>) {
  check_sliding_window_args(q, k, v, window);
  return {at::empty(q.sizes(), q.options()),
          at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor&, const at::Tensor&, int64_t window, bool, std::optional<double>) {
  check_sliding_window_args(q, k, v, window);
  return {at::empty(q.sizes(), q.options()), at::empty(k.sizes(), k.options()),
          at::empty(v.sizes(), v.options())};
}

}  // namespace tfmbs
