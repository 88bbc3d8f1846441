"""torch_tfmbs.nn.FabricAttention / SlidingWindowAttention against
nn.MultiheadAttention with the same weights (and the band mask)."""
import pytest
import torch
from torch import nn

from torch_tfmbs.attention import band_mask
from torch_tfmbs.nn import FabricAttention, SlidingWindowAttention


def pair(module, seed=0, **kwargs):
    torch.manual_seed(seed)
    reference = nn.MultiheadAttention(32, 4, **kwargs)
    module.load_state_dict(reference.state_dict())
    return reference, module


def x(batch_first, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(2, 10, 32, generator=g)
    return t if batch_first else t.transpose(0, 1).contiguous()


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", "tfmbs"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [False, True])
def test_dense_equals_multihead_attention(device, batch_first, need_weights):
    ref, mod = pair(FabricAttention(32, 4, batch_first=batch_first), batch_first=batch_first)
    inp = x(batch_first)
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, 7:] = True
    want, want_w = ref(inp, inp, inp, key_padding_mask=pad, need_weights=need_weights)
    mod.to(device)
    got, got_w = mod(*(inp.to(device),) * 3, key_padding_mask=pad.to(device), need_weights=need_weights)
    assert got.device.type == device
    close(got.cpu(), want)
    if need_weights:
        close(got_w.cpu(), want_w)


@pytest.mark.parametrize("device", ["cpu", "tfmbs"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_sliding_window_equals_band_masked_attention(device, causal, train):
    ref, mod = pair(SlidingWindowAttention(32, 4, window=3, causal=causal), batch_first=True)
    ref.train(train)
    mod.train(train)
    inp = x(True)
    blocked = ~band_mask(10, 3, causal)
    ref_in = inp.clone().requires_grad_()
    want = ref(ref_in, ref_in, ref_in, attn_mask=blocked, need_weights=False)[0]
    want.sum().backward()
    mod.to(device)
    dev_in = inp.to(device).requires_grad_()
    got = mod(dev_in)[0]
    got.sum().backward()
    close(got.detach().cpu(), want.detach())
    close(dev_in.grad.cpu(), ref_in.grad)
    for (name, p), q in zip(ref.named_parameters(), mod.parameters()):
        close(q.grad.cpu(), p.grad)


def test_sliding_window_with_dropout_and_weights_runs():
    mod = SlidingWindowAttention(32, 4, window=3, dropout=0.5).to("tfmbs").train()
    out = mod(x(True).to("tfmbs"))[0]
    assert out.shape == (2, 10, 32)
    out, weights = mod(x(True).to("tfmbs"), need_weights=True)
    # the weights see only the window: zero outside it
    assert torch.all(weights.cpu()[:, ~band_mask(10, 3, True)] == 0)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="window_size"):
        FabricAttention(32, 4, sparse=True)
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        FabricAttention(32, 4, add_bias_kv=True)


@pytest.mark.parametrize("padded", [False, True])
def test_mistral_with_sliding_window_on_tfmbs_equals_cpu(padded):
    import transformers as tf

    from torch_tfmbs.attention import register_transformers_attention
    name = register_transformers_attention()
    cfg = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, sliding_window=4)
    torch.manual_seed(0)
    cpu = tf.MistralForCausalLM(tf.MistralConfig(**cfg, attn_implementation="sdpa")).eval()
    dev = tf.MistralForCausalLM(tf.MistralConfig(**cfg, attn_implementation=name)).eval()
    dev.load_state_dict(cpu.state_dict())
    dev.to("tfmbs")
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 12, dtype=torch.long)
    if padded:
        mask[1, :3] = 0
    with torch.no_grad():
        want = cpu(input_ids=ids, attention_mask=mask).logits
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            got = dev(input_ids=ids.to("tfmbs"), attention_mask=mask.to("tfmbs")).logits
    # The kernel runs with transformers' mask (the band, and the padding).
    assert any(e.name == "tfmbs::_sliding_window_attention" for e in prof.events())
    close(got.cpu(), want)
