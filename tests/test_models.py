"""Real models' training steps on tfmbs under TFMBS_FALLBACK=error: every op
has a tfmbs kernel, and losses, gradients and AdamW-updated weights equal
CPU's."""
import pytest
import torch

import model_zoo
import torch_tfmbs


@pytest.fixture
def no_fallback():
    torch_tfmbs.set_fallback_mode("error")
    yield
    torch_tfmbs.set_fallback_mode("allow")


def assert_equal(cpu, dev):
    """Losses, gradients and weights, bitwise."""
    cpu_losses, cpu_grads, cpu_weights = cpu
    dev_losses, dev_grads, dev_weights = dev
    pairs = list(zip(cpu_losses, dev_losses))
    pairs += [(cpu_grads[n], dev_grads[n]) for n in cpu_grads]
    pairs += [(cpu_weights[n], dev_weights[n]) for n in cpu_weights]
    assert cpu_grads.keys() == dev_grads.keys() and cpu_weights.keys() == dev_weights.keys()
    for c, d in pairs:
        assert torch.equal(c, d)


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
@pytest.mark.parametrize("name,attn", [("gpt2", "sdpa"), ("bert", "sdpa"), ("llama", "sdpa"),
                                       ("llama", "eager"), ("minilm", "sdpa"), ("vit", "sdpa"),
                                       ("resnet", None)])
def test_training_step_equals_cpu_bitwise(name, attn, fused, no_fallback):
    kwargs = {"fused": fused, "attn_implementation": attn}
    cpu = model_zoo.train_step(name, "cpu", **kwargs)
    dev = model_zoo.train_step(name, "tfmbs", **kwargs)
    assert_equal(cpu, dev)
