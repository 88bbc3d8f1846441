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


def reference(q, k, v, window, causal, scale=None, mask=None):
    """SDPA's math kernel in float64 with the band mask (and the extra mask
    within it) and repeated K/V."""
    group = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(group, dim=1) for t in (k, v))
    allowed = band(q.shape[2], window, causal)
    if mask is None:
        mask = allowed
    elif mask.dtype == torch.bool:
        mask = mask & allowed
    else:
        mask = mask.double().masked_fill(~allowed, float("-inf"))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask,
                                              scale=scale)


def inputs(shape=(2, 4, 9, 16), kv_heads=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    kv = (shape[0], kv_heads, shape[2], shape[3])
    return [torch.randn(s, generator=g).to(dtype) for s in (shape, kv, kv)]


def run(device, q, k, v, window, causal, scale=None, mask=None):
    leaves = [t.detach().to(device).requires_grad_() for t in (q, k, v)]
    if mask is not None and mask.is_floating_point():
        leaves.append(mask.detach().to(device).requires_grad_())
    elif mask is not None:
        mask = mask.to(device)
    out = sliding_window_attention(*leaves[:3], window, causal, scale,
                                   leaves[3] if len(leaves) == 4 else mask)
    out.backward(grad_of(out))
    return [out.detach().cpu()] + [t.grad.cpu() for t in leaves]


def grad_of(out):
    return torch.ones_like(out) + torch.arange(out.numel(), device=out.device).view(out.shape) % 3


def check_against_reference(q, k, v, window, causal, scale=None, mask=None):
    """Forward and every gradient: the CPU and tfmbs kernels give the same
    bits, within 1e-5 of the float64 reference."""
    refs = [t.double().requires_grad_() for t in (q, k, v)]
    ref_mask = mask.double().requires_grad_() if mask is not None and mask.is_floating_point() else mask
    ref = reference(*refs, window, causal, scale, ref_mask)
    ref.backward(grad_of(ref))
    want = [ref.detach()] + [t.grad for t in refs] + ([ref_mask.grad] if ref_mask is not mask else [])
    cpu = run("cpu", q, k, v, window, causal, scale, mask)
    dev = run("tfmbs", q, k, v, window, causal, scale, mask)
    assert len(cpu) == len(want)
    for c, d, w in zip(cpu, dev, want):
        assert torch.equal(c, d)  # one kernel, two devices
        torch.testing.assert_close(c.double(), w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window,length,kv_heads", [(3, 9, 2), (1, 9, 4), (20, 9, 1), (4, 1, 2), (5, 33, 2)])
def test_equals_sdpa_with_the_band_mask(window, length, kv_heads, causal):
    check_against_reference(*inputs((2, 4, length, 16), kv_heads), window, causal)


@pytest.mark.parametrize("scale", [None, 0.5])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [1, 7, 64, 100, 1000])
@pytest.mark.parametrize("window", [1, 3, 16, "L"])
def test_grid(length, window, causal, scale):
    """The acceptance grid: lengths across tile edges, windows from 1 to the
    whole sequence, grouped-query heads."""
    window = length if window == "L" else window
    check_against_reference(*inputs((1, 4, length, 16), 2, seed=length), window, causal, scale)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [9, 100])
def test_bool_mask_within_the_window(length, causal):
    q, k, v = inputs((2, 4, length, 16), 2)
    mask = torch.rand(2, 1, length, length, generator=torch.Generator().manual_seed(5)) > 0.4
    mask[0, 0, 3] = False  # a query that sees no key: zeros, as SDPA
    check_against_reference(q, k, v, 5, causal, mask=mask)


@pytest.mark.parametrize("shape", [(100, 100), (1, 4, 100, 100), (2, 1, 1, 100)])
def test_float_mask_and_its_gradient(shape):
    q, k, v = inputs((2, 4, 100, 16), 2)
    mask = torch.randn(shape, generator=torch.Generator().manual_seed(6))
    check_against_reference(q, k, v, 17, True, scale=0.5, mask=mask)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_within_tolerance(dtype):
    q, k, v = inputs(dtype=dtype)
    dev = run("tfmbs", q, k, v, 4, True, scale=0.3)
    refs = [t.double().requires_grad_() for t in (q, k, v)]
    ref = reference(*refs, 4, True, scale=0.3)
    assert dev[0].dtype == dtype
    torch.testing.assert_close(dev[0].double(), ref.detach(), rtol=1e-2, atol=1e-2)


def peak_bytes(length, window=32):
    """The pool's peak beyond q, k, v for a forward and backward."""
    q, k, v = [t.to("tfmbs").requires_grad_() for t in inputs((1, 1, length, 16), 1)]
    torch.tfmbs.reset_peak_memory_stats()
    before = torch.tfmbs.memory_allocated()
    sliding_window_attention(q, k, v, window).sum().backward()
    return torch.tfmbs.max_memory_allocated() - before, q.nbytes


def test_memory_is_linear_in_length(clean_memory):
    small, _ = peak_bytes(2048)
    peak, q_bytes = peak_bytes(4096)
    # out, its log-sum-exp, the gradients and their temporaries: a few times
    # q's size, nothing near the L x L scores (64 MiB here)
    assert peak <= 8 * q_bytes < 4096 * 4096 * 4 / 4
    assert peak <= 2.2 * small


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
    (lambda q, k, v, w: (q, k, v, w, True, None, torch.ones(9, 8, dtype=torch.bool, device="tfmbs")),
     "does not broadcast"),
    (lambda q, k, v, w: (q, k, v, w, True, None, torch.ones(9, 9, dtype=torch.int64, device="tfmbs")),
     "attn_mask must be bool or q's dtype"),
    (lambda q, k, v, w: (q, k, v, w, True, None, torch.ones(9, 9, dtype=torch.bool)), "q's device"),
])
def test_bad_input_is_a_clear_error(change, message):
    q, k, v = [t.to("tfmbs") for t in inputs()]
    with pytest.raises(RuntimeError, match=message):
        sliding_window_attention(*change(q, k, v, 3))
    assert q.cpu().shape == (2, 4, 9, 16)
