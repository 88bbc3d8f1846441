"""PyTorch's own operator database (OpInfo) run on tfmbs against CPU: every
op's float32 sample inputs, made on each device from the same seed, must give
CPU's results exactly (device-generic coverage of the fallback, the native
kernels and the overrides)."""
import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db

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


def samples(op, device):
    torch.manual_seed(0)  # tfmbs draws from CPU's generator: same values
    return list(op.sample_inputs(device, torch.float32, requires_grad=False))[:SAMPLES_PER_OP]


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
