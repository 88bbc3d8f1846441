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


def test_dropout_takes_the_math_path_and_runs():
    q, k, v = [t.to("tfmbs") for t in qkv()]
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert out.shape == q.shape and out.device.type == "tfmbs"


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
