"""tfmbs::sliding_window_attention against PyTorch's SDPA (math) with the
band mask: forward and gradients, CPU and tfmbs kernels, GQA, errors."""
import pytest
import torch
import torch.nn.functional as F

from torch_tfmbs import sliding_window_attention


def band(length, window, causal):
    i = torch.arange(length)
    d = i[:, None] - i[None, :]
    return ((d >= 0) & (d < window)) if causal else (d.abs() < window)


def reference(q, k, v, window, causal, scale=None):
    """SDPA's math kernel in float64 with the band mask and repeated K/V."""
    group = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(group, dim=1) for t in (k, v))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        return F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                              attn_mask=band(q.shape[2], window, causal), scale=scale)


def inputs(shape=(2, 4, 9, 16), kv_heads=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    kv = (shape[0], kv_heads, shape[2], shape[3])
    return [torch.randn(s, generator=g).to(dtype) for s in (shape, kv, kv)]


def run(device, q, k, v, window, causal, scale=None):
    leaves = [t.detach().to(device).requires_grad_() for t in (q, k, v)]
    out = sliding_window_attention(*leaves, window, causal, scale)
    grad = torch.ones_like(out) + torch.arange(out.numel(), device=out.device).view(out.shape) % 3
    out.backward(grad)
    return [out.detach().cpu()] + [t.grad.cpu() for t in leaves]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window,length,kv_heads", [(3, 9, 2), (1, 9, 4), (20, 9, 1), (4, 1, 2), (5, 33, 2)])
def test_equals_sdpa_with_the_band_mask(window, length, kv_heads, causal):
    q, k, v = inputs((2, 4, length, 16), kv_heads)
    refs = [t.double().requires_grad_() for t in (q, k, v)]
    ref = reference(*refs, window, causal)
    grad = torch.ones_like(ref) + torch.arange(ref.numel()).view(ref.shape) % 3
    ref.backward(grad)
    want = [ref.detach()] + [t.grad for t in refs]
    cpu = run("cpu", q, k, v, window, causal)
    dev = run("tfmbs", q, k, v, window, causal)
    for c, d, w in zip(cpu, dev, want):
        assert torch.equal(c, d)  # one kernel, two devices
        torch.testing.assert_close(c.double(), w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_within_tolerance(dtype):
    q, k, v = inputs(dtype=dtype)
    dev = run("tfmbs", q, k, v, 4, True, scale=0.3)
    refs = [t.double().requires_grad_() for t in (q, k, v)]
    ref = reference(*refs, 4, True, scale=0.3)
    assert dev[0].dtype == dtype
    torch.testing.assert_close(dev[0].double(), ref.detach(), rtol=1e-2, atol=1e-2)


def test_memory_is_linear_in_length(clean_memory):
    length, window = 4096, 32
    q, k, v = [t.to("tfmbs") for t in inputs((1, 1, length, 16), 1)]
    torch.tfmbs.reset_peak_memory_stats()
    before = torch.tfmbs.memory_allocated()
    out = sliding_window_attention(q, k, v, window)
    # out and its log-sum-exp: nothing near the L x L scores (64 MiB here)
    assert torch.tfmbs.max_memory_allocated() - before <= 2 * q.nbytes
    assert out.shape == q.shape


def test_meta_and_compile():
    q, k, v = inputs()
    meta = sliding_window_attention(*[t.to("meta") for t in (q, k, v)], 3)
    assert meta.shape == q.shape and meta.device.type == "meta"
    dq, dk, dv = [t.to("tfmbs") for t in (q, k, v)]
    compiled = torch.compile(lambda a, b, c: sliding_window_attention(a, b, c, 3) * 2,
                             backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(dq, dk, dv).cpu(), sliding_window_attention(q, k, v, 3) * 2)


@pytest.mark.parametrize("change,message", [
    (lambda q, k, v, w: (q, k[..., :8], v[..., :8], w), "head_dim"),
    (lambda q, k, v, w: (q, k, v, 0), "window must be >= 1"),
    (lambda q, k, v, w: (q, k.cpu(), v, w), "one device"),
    (lambda q, k, v, w: (q, k.double(), v, w), "one dtype"),
    (lambda q, k, v, w: (q[:, :, :5], k, v, w), "length"),
    (lambda q, k, v, w: (q[:, :3], k, v, w), "multiple"),
    (lambda q, k, v, w: (q[0], k, v, w), "4-D"),
])
def test_bad_input_is_a_clear_error(change, message):
    q, k, v = [t.to("tfmbs") for t in inputs()]
    with pytest.raises(RuntimeError, match=message):
        sliding_window_attention(*change(q, k, v, 3))
    assert q.cpu().shape == (2, 4, 9, 16)
