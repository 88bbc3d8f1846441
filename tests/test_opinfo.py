"""PyTorch's own operator database (OpInfo) run on tfmbs against CPU: every
op's float32 sample inputs, made on each device from the same seed, must give
CPU's results exactly (device-generic coverage of the fallback, the native
kernels and the overrides)."""
import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.opinfo.core import SampleInput
from torch.utils._pytree import tree_flatten, tree_unflatten

import torch_tfmbs

# Ops outside what a dense device backend offers (sparse layouts), or whose
# samples draw random numbers inside the op in a device-dependent way.
SKIP_PREFIXES = ("sparse.", "to_sparse", "nn.functional.dropout", "rand", "normal", "bernoulli",
                 "multinomial", "empty", "new_empty", "uniform", "exponential", "geometric",
                 "cauchy", "log_normal", "nn.functional.rrelu", "nn.functional.feature_alpha_dropout",
                 "nn.functional.alpha_dropout", "_")
OPS = [op for op in op_db
       if not op.name.startswith(SKIP_PREFIXES) and "nondeterministic" not in op.name
       and torch.float32 in op.supported_dtypes("cpu")]
SAMPLES_PER_OP = 2
# OpInfo name -> the ATen ops its tfmbs run sent through the CPU fallback
# (empty: every op it called has a tfmbs kernel); conftest.py reports it.
FALLBACKS = {}


def _made(op, device):
    torch.manual_seed(0)
    made = list(op.sample_inputs(device, torch.float32, requires_grad=False))[:SAMPLES_PER_OP]
    return [(s.input, s.args, s.kwargs) for s in made]


def _to_device_keeping_layout(t, device):
    """t on `device` with its storage, strides and offset (views stay views)."""
    whole = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage())
    return whole.to(device).as_strided(t.size(), t.stride(), t.storage_offset())


def samples(op, device):
    """The op's samples for `device`, with CPU's values: tfmbs has a generator
    of its own (as CUDA has), so the tensors of the samples made for `device`
    and numbers take the values of the same samples made on CPU, keeping the
    devices and layouts the device's sample function chose."""
    cpu = _made(op, "cpu")
    if device == "cpu":
        return [SampleInput(i, args=a, kwargs=k) for i, a, k in cpu]
    out = []
    for cpu_sample, dev_sample in zip(cpu, _made(op, device)):
        cpu_leaves, _ = tree_flatten(cpu_sample)
        dev_leaves, spec = tree_flatten(dev_sample)
        leaves = [_to_device_keeping_layout(c, d.device)
                  if isinstance(d, torch.Tensor) and d.device.type == "tfmbs"
                  else d if isinstance(d, (torch.device, str)) else c
                  for c, d in zip(cpu_leaves, dev_leaves)]
        i, a, k = tree_unflatten(leaves, spec)
        out.append(SampleInput(i, args=a, kwargs=k))
    return out


def compare(ref, got):
    if isinstance(ref, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.device.type == "tfmbs", got
        assert got.shape == ref.shape and got.dtype == ref.dtype
        torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=0, equal_nan=True)
    elif isinstance(ref, (list, tuple)):
        assert len(ref) == len(got)
        for r, g in zip(ref, got):
            compare(r, g)
    else:
        assert ref == got or (ref != ref and got != got)


@pytest.mark.parametrize("op", OPS, ids=[f"{op.name}.{op.variant_test_name}" for op in OPS])
def test_op_matches_cpu(op):
    cpu_samples = samples(op, "cpu")
    dev_samples = samples(op, "tfmbs")
    assert len(dev_samples) == len(cpu_samples) > 0
    torch_tfmbs.reset_fallback_stats()
    try:
        run_samples(op, cpu_samples, dev_samples)
    finally:
        FALLBACKS[op.name] = set(torch_tfmbs.fallback_stats())


def run_samples(op, cpu_samples, dev_samples):
    for cpu, dev in zip(cpu_samples, dev_samples):
        try:
            torch.manual_seed(1)
            ref = op(cpu.input, *cpu.args, **cpu.kwargs)
        except Exception as e:  # noqa: BLE001 - then tfmbs must refuse too
            torch.manual_seed(1)
            with pytest.raises(type(e)):
                op(dev.input, *dev.args, **dev.kwargs)
            continue
        torch.manual_seed(1)
        got = op(dev.input, *dev.args, **dev.kwargs)
        compare(ref, got)
