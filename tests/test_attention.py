"""F.scaled_dot_product_attention on tfmbs runs CPU's fused kernel on device
memory: CPU's numbers exactly, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

import torch_tfmbs


def qkv(seed=0, shape=(2, 3, 7, 16)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(3)]


@pytest.mark.parametrize("kind", ["plain", "causal", "float_mask", "bool_mask", "sliding_window"])
def test_forward_and_backward_equal_cpu(kind):
    q, k, v = qkv()
    kwargs = {}
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
    torch_tfmbs.reset_fallback_stats()
    out = F.scaled_dot_product_attention(*dev_in, **dev_kwargs)
    assert "aten::bmm" not in torch_tfmbs.fallback_stats()  # the fused kernel ran
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
