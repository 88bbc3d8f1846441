"""F.scaled_dot_product_attention on tfmbs runs CPU's fused kernel on device
memory: CPU's numbers exactly, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

import torch_tfmbs


def qkv(seed=0, shape=(2, 3, 7, 16), kv_heads=None):
    g = torch.Generator().manual_seed(seed)
    kv_shape = shape if kv_heads is None else (shape[0], kv_heads) + shape[2:]
    return [torch.randn(s, generator=g) for s in (shape, kv_shape, kv_shape)]


def aten_ops_run(fn):
    """The names of the ATen ops `fn` called (torch.profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("kind", ["plain", "causal", "float_mask", "bool_mask", "sliding_window",
                                  "gqa", "gqa_causal"])
def test_forward_and_backward_equal_cpu(kind):
    q, k, v = qkv(kv_heads=1 if kind.startswith("gqa") else None)
    kwargs = {}
    if kind.startswith("gqa"):
        kwargs["enable_gqa"] = True
        kwargs["is_causal"] = kind == "gqa_causal"
    if kind == "causal":
        kwargs["is_causal"] = True
    elif kind == "float_mask":
        kwargs["attn_mask"] = torch.randn(7, 7)
    elif kind == "bool_mask":
        kwargs["attn_mask"] = torch.rand(7, 7) > 0.3
        kwargs["attn_mask"].fill_diagonal_(True)
    elif kind == "sliding_window":  # causal, each query sees its last 3 keys
        i = torch.arange(7)
        kwargs["attn_mask"] = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < 3)
    cpu_in = [t.clone().requires_grad_() for t in (q, k, v)]
    dev_in = [t.to("tfmbs").requires_grad_() for t in (q, k, v)]
    dev_kwargs = {key: (val.to("tfmbs") if isinstance(val, torch.Tensor) else val)
                  for key, val in kwargs.items()}
    ref = F.scaled_dot_product_attention(*cpu_in, **kwargs)
    ran = aten_ops_run(lambda: F.scaled_dot_product_attention(*dev_in, **dev_kwargs))
    assert "aten::_scaled_dot_product_fused_attention_overrideable" in ran and "aten::bmm" not in ran
    out = F.scaled_dot_product_attention(*dev_in, **dev_kwargs)
    assert out.device.type == "tfmbs"
    assert torch.equal(out.cpu(), ref)
    grad = torch.randn(ref.shape)
    ref.backward(grad)
    out.backward(grad.to("tfmbs"))
    for c, d in zip(cpu_in, dev_in):
        assert d.grad.device.type == "tfmbs"
        assert torch.equal(d.grad.cpu(), c.grad)


def run_both(q_shape, kv_shape, dtype=torch.float32, mask_shape=None, mask_grad=False, seed=None,
             **kwargs):
    """SDPA forward and backward on CPU and on tfmbs from the same values
    (and the same seed for dropout): [(cpu, tfmbs)] for out and each grad."""
    g = torch.Generator().manual_seed(0)
    values = [torch.randn(s, generator=g).to(dtype) for s in (q_shape, kv_shape, kv_shape)]
    if mask_shape is not None:
        values.append(torch.randn(mask_shape, generator=g).to(dtype))
    results = []
    for device in ("cpu", "tfmbs"):
        leaves = [t.detach().to(device).requires_grad_(i < 3 or mask_grad) for i, t in enumerate(values)]
        if seed is not None:
            torch.manual_seed(seed) if device == "cpu" else torch.tfmbs.manual_seed(seed)
        mask = leaves[3] if len(leaves) == 4 else None
        out = F.scaled_dot_product_attention(*leaves[:3], attn_mask=mask, **kwargs)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype).view(out.shape).to(device))
        results.append([out.detach().cpu()] + [t.grad.cpu() for t in leaves if t.requires_grad])
    return list(zip(*results))


@pytest.mark.parametrize("case", [
    dict(q_shape=(1, 4, 1, 32), kv_shape=(1, 4, 50, 32)),  # decode
    dict(q_shape=(1, 4, 1, 32), kv_shape=(1, 4, 50, 32), mask_shape=(1, 1, 1, 50)),
    dict(q_shape=(1, 8, 1, 32), kv_shape=(1, 2, 50, 32), enable_gqa=True),  # GQA decode
    dict(q_shape=(2, 3, 5, 16), kv_shape=(2, 3, 11, 16), is_causal=True),  # Lq != Lk
    dict(q_shape=(3, 1, 16), kv_shape=(3, 1, 16)),  # 3-D, length 1
    dict(q_shape=(3, 7, 16), kv_shape=(3, 9, 16)),
    dict(q_shape=(1, 2, 9, 256), kv_shape=(1, 2, 9, 256), is_causal=True),  # head dim 256
    dict(q_shape=(1, 2, 9, 16), kv_shape=(1, 2, 9, 16), mask_shape=(9, 9), mask_grad=True),
    dict(q_shape=(2, 4, 9, 16), kv_shape=(2, 2, 9, 16), enable_gqa=True, scale=0.5),
    dict(q_shape=(2, 3, 9, 16), kv_shape=(2, 3, 9, 16), dtype=torch.bfloat16, is_causal=True),
    dict(q_shape=(2, 3, 9, 16), kv_shape=(2, 3, 9, 16), dtype=torch.float16),
])
def test_shapes_dtypes_and_masks_equal_cpu(case):
    for cpu, dev in run_both(**case):
        assert torch.equal(cpu, dev)


@pytest.mark.parametrize("kv_heads", [None, 1])
def test_dropout_draws_what_cpu_draws_for_the_same_seed(kv_heads):
    # CPU's kernel for dropout is the math one: the same seed gives the same
    # mask on the tfmbs generator, so the same values and gradients.
    shape = (2, 3, 7, 16)
    kv_shape = shape if kv_heads is None else (2, kv_heads, 7, 16)
    results = run_both(shape, kv_shape, dropout_p=0.3, seed=11, enable_gqa=kv_heads is not None)
    for cpu, dev in results:
        assert torch.equal(cpu, dev)
    out = results[0][1]
    other_seed = run_both(shape, kv_shape, dropout_p=0.3, seed=12, enable_gqa=kv_heads is not None)
    assert not torch.equal(out, other_seed[0][1])  # the seed matters


def test_mismatched_shapes_are_an_error():
    q, k, v = [t.to("tfmbs") for t in qkv()]
    with pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(q, k[..., :8], v)
    assert q.cpu().shape == (2, 3, 7, 16)


class Attend(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True) * 2


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_sdpa_equals_eager(backend):
    # The backend choice reads only metadata: it works on FakeTensors.
    q, k, v = [t.to("tfmbs") for t in qkv(kv_heads=1)]
    compiled = torch.compile(Attend(), backend=backend, fullgraph=True)
    assert torch.equal(compiled(q, k, v).cpu(), Attend()(q, k, v).cpu())


def test_exported_sdpa_runs_on_tfmbs():
    q, k, v = [t.to("tfmbs") for t in qkv(kv_heads=1)]
    program = torch.export.export(Attend(), (q, k, v))
    assert torch.equal(program.module()(q, k, v).cpu(), Attend()(*[t.cpu() for t in (q, k, v)]))
