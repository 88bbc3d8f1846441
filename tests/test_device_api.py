"""torch.tfmbs's device API against what torch.cuda has for the same calls:
signatures, types, values (computed here from the configuration conftest.py
sets and the README documents, not read back from the backend), and errors
for a device that does not exist."""
import fractions
import inspect
import os
import pathlib
import re

import pytest
import torch

import torch_tfmbs

from conftest import run_python

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEGMENT = 2 << 20  # the README: pools are whole 2 MiB segments


def pool_bytes(text):
    """TFMBS_MEMORY as the README's Configuration table says: bytes, binary
    (KiB, or K) or decimal (KB) units, rounded up to whole segments."""
    number, unit = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text).groups()
    unit = unit.lower()
    powers = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4}
    if unit.endswith("ib"):
        scale = 1024 ** powers[unit[0]]
    elif len(unit) == 2:
        scale = 1000 ** powers[unit[0]]
    else:
        scale = 1024 ** powers[unit]
    size = fractions.Fraction(number) * scale
    return -(-int(size) // SEGMENT) * SEGMENT


def engine_isa_of_this_cpu():
    """The fast engine's level from /proc/cpuinfo, by the feature lists of
    csrc/fabric/cpu_features.h (cpuinfo spells avx512vnni "avx512_vnni")."""
    flags = set(re.search(r"^flags\s*:(.*)$", pathlib.Path("/proc/cpuinfo").read_text(),
                          re.MULTILINE).group(1).split())
    avx512 = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi"}
    if avx512 | {"amx_tile", "amx_int8", "gfni"} <= flags:
        return "amx"
    if avx512 <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "scalar"


def tfd_version():
    """kTfdVersion of the descriptor format (csrc/fabric/tfd.h)."""
    text = (ROOT / "csrc/fabric/tfd.h").read_text()
    return int(re.search(r"kTfdVersion\s*=\s*(0x[0-9a-fA-F]+|\d+)", text).group(1), 0)


def test_pool_bytes_reads_the_readme_units():
    assert pool_bytes("1GiB") == 1 << 30
    assert pool_bytes("3MB") == 4 << 20  # 3,000,000 bytes, rounded up to two segments
    assert pool_bytes("1.5GB") == 716 * SEGMENT  # 1,500,000,000 bytes: 715.3 segments
    assert pool_bytes("4194305") == 6 << 20


# ------------------------------------------------------------- signatures

@pytest.mark.parametrize("name", [
    "get_device_properties", "get_device_name", "get_device_capability", "is_bf16_supported",
    "is_initialized", "mem_get_info", "synchronize", "device", "device_of", "current_device",
    "device_count", "set_device", "is_available"])
def test_signature_is_torch_cuda_s(name):
    def params(f):
        return [(p.name, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(getattr(torch.tfmbs, name)) == params(getattr(torch.cuda, name))


@pytest.mark.parametrize("name", ["autocast", "GradScaler"])
def test_amp_signature_is_torch_cuda_amp_s(name):
    def params(cls):
        return [(p.name, p.default) for p in inspect.signature(cls.__init__).parameters.values()]

    assert params(getattr(torch.tfmbs.amp, name)) == params(getattr(torch.cuda.amp, name))


# --------------------------------------------------------------- properties

def test_properties_are_the_configuration():
    count = torch.tfmbs.device_count()
    assert count == int(os.environ["TFMBS_NUM_FABRICS"])
    for i in range(count):
        p = torch.tfmbs.get_device_properties(i)
        assert isinstance(p.name, str) and p.name
        assert (type(p.major), type(p.minor), type(p.total_memory)) == (int, int, int)
        assert p.total_memory == pool_bytes(os.environ["TFMBS_MEMORY"])
        assert p.total_memory == torch.tfmbs.mem_get_info(i)[1]
        assert p.tiles == int(os.environ.get("TFMBS_TILES", "4"))
        assert p.lanes_per_tile == 15  # the fabric spec's lanes per tile
        assert p.clock_mhz == int(os.environ.get("TFMBS_CLOCK_MHZ", "250"))
        assert p.engine_isa == engine_isa_of_this_cpu()


def test_properties_follow_the_environment():
    r = run_python(
        "import torch, torch_tfmbs\n"
        "p = torch.tfmbs.get_device_properties(2)\n"
        "print(torch.tfmbs.device_count(), p.total_memory, p.tiles, p.clock_mhz)\n",
        env={"TFMBS_NUM_FABRICS": "3", "TFMBS_MEMORY": "3MB", "TFMBS_TILES": "7",
             "TFMBS_CLOCK_MHZ": "100"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", str(pool_bytes("3MB")), "7", "100"]


def test_every_device_form_is_accepted():
    # torch.cuda takes an int, a string, a torch.device or None (the current
    # device). The devices here have equal properties, so this shows each form
    # is read, not which device it picks: test_bad_index_* shows that.
    for i in range(torch.tfmbs.device_count()):
        expected = torch.tfmbs.get_device_properties(i)
        for form in (f"tfmbs:{i}", torch.device("tfmbs", i)):
            assert torch.tfmbs.get_device_properties(form) == expected
        with torch.tfmbs.device(i):
            assert torch.tfmbs.get_device_properties() == expected
            assert torch.tfmbs.get_device_properties("tfmbs") == expected


def test_name_and_capability():
    name = torch.tfmbs.get_device_name()
    assert isinstance(name, str) and name == torch.tfmbs.get_device_properties().name
    capability = torch.tfmbs.get_device_capability(1)
    assert type(capability) is tuple and [type(c) for c in capability] == [int, int]
    assert capability == (tfd_version(), 0)


@pytest.mark.parametrize("bad", [2, 99, -2, "tfmbs:5", torch.device("tfmbs", 7)])
def test_bad_index_is_torch_cuda_s_error(bad):
    # torch.cuda raises AssertionError("Invalid device id") for these; the
    # rest of tfmbs raises IndexError for an index with no device.
    assert 'raise AssertionError("Invalid device id")' in inspect.getsource(
        torch.cuda.get_device_properties)
    for call in (torch.tfmbs.get_device_properties, torch.tfmbs.get_device_name,
                 torch.tfmbs.get_device_capability):
        with pytest.raises(AssertionError, match="Invalid device id") as e:
            call(bad)
        assert isinstance(e.value, IndexError)
        assert "2 tfmbs devices" in str(e.value)


def test_another_device_type_is_a_value_error_as_on_cuda():
    with pytest.raises(ValueError):
        torch.cuda._utils._get_device_index(torch.device("cpu"))
    for call in (torch.tfmbs.get_device_properties, torch.tfmbs.get_device_name,
                 torch.tfmbs.device):
        with pytest.raises(ValueError, match="expected a tfmbs device, got cpu"):
            call("cpu")


# -------------------------------------------------------------- bf16, init

def test_bf16_is_supported_and_works():
    assert torch.tfmbs.is_bf16_supported() is True
    assert torch.tfmbs.is_bf16_supported(including_emulation=False) is True
    a = torch.randn(16, 16, dtype=torch.bfloat16)
    b = torch.randn(16, 16, dtype=torch.bfloat16)
    on_device = a.to("tfmbs") @ b.to("tfmbs")
    assert on_device.dtype == torch.bfloat16
    assert torch.equal(on_device.cpu(), a @ b)


def test_is_initialized_and_false_in_a_bad_fork():
    keep = torch.ones(4, device="tfmbs")
    assert torch.tfmbs.is_initialized() is True
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, repr((torch.tfmbs.is_initialized(), torch.tfmbs._is_in_bad_fork())).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read()
    os.waitpid(pid, 0)
    assert child == "(False, True)"
    assert torch.tfmbs.is_initialized() is True
    del keep


# ------------------------------------------------------ device, device_of

def test_device_context_as_torch_cuda_device():
    torch.tfmbs.set_device(0)
    with torch.tfmbs.device(1):
        assert torch.tfmbs.current_device() == 1
        with torch.tfmbs.device("tfmbs:0"):
            assert torch.tfmbs.current_device() == 0
        assert torch.tfmbs.current_device() == 1
        for noop in (None, -1, -5):  # torch.cuda.device: no-ops
            with torch.tfmbs.device(noop):
                assert torch.tfmbs.current_device() == 1
    assert torch.tfmbs.current_device() == 0
    with pytest.raises(IndexError, match="invalid device index 9"):
        torch.tfmbs.device(9)
    with pytest.raises(RuntimeError, match="boom"):
        with torch.tfmbs.device(1):
            raise RuntimeError("boom")
    assert torch.tfmbs.current_device() == 0


def test_device_of_tensors_and_storages():
    torch.tfmbs.set_device(0)
    t = torch.ones(3, device="tfmbs:1")
    for obj in (t, t.untyped_storage(), t[1:]):
        with torch.tfmbs.device_of(obj):
            assert torch.tfmbs.current_device() == 1
        assert torch.tfmbs.current_device() == 0
    with torch.tfmbs.device(1):
        with torch.tfmbs.device_of(torch.ones(3)):  # a CPU tensor: a no-op
            assert torch.tfmbs.current_device() == 1
    assert isinstance(torch.tfmbs.device_of(t), torch.tfmbs.device)


# ---------------------------------------------------------- torch.accelerator

def test_torch_accelerator_routes_to_tfmbs():
    assert torch.accelerator.current_accelerator() == torch.device("tfmbs")
    assert torch.get_device_module() is torch.tfmbs
    assert torch.accelerator.device_count() == int(os.environ["TFMBS_NUM_FABRICS"])
    keep = torch.ones(2, device="tfmbs")  # synchronize is a no-op before the first use
    with torch.tfmbs.device(1):
        assert torch.accelerator.current_device_index() == 1
        torch.accelerator.synchronize()
    torch.accelerator.synchronize("tfmbs:1")
    assert torch.accelerator.get_memory_info(1) == torch.tfmbs.mem_get_info(1)
    with pytest.raises(IndexError, match="invalid device index 5"):
        torch.accelerator.synchronize(5)
    del keep


# ---------------------------------------------------------------------- amp

def test_amp_is_importable_as_torch_cuda_amp():
    from torch.tfmbs.amp import GradScaler, autocast

    assert autocast is torch.tfmbs.amp.autocast and GradScaler is torch.tfmbs.amp.GradScaler


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_autocast_is_torch_autocast_on_tfmbs(dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    kwargs = {} if dtype is None else {"dtype": dtype}
    # torch.cuda.amp.autocast's default dtype is float16
    expected_dtype = dtype or inspect.signature(torch.cuda.amp.autocast.__init__).parameters[
        "dtype"].default
    with torch.autocast("cpu", dtype=expected_dtype):
        expected = linear(x)
    device_linear = linear.to("tfmbs")
    with torch.tfmbs.amp.autocast(**kwargs):
        assert torch.is_autocast_enabled("tfmbs")
        assert torch.get_autocast_dtype("tfmbs") == expected_dtype
        y = device_linear(x.to("tfmbs"))
    assert not torch.is_autocast_enabled("tfmbs")
    assert y.dtype == expected.dtype == expected_dtype
    assert torch.equal(y.cpu(), expected)
    with torch.tfmbs.amp.autocast(enabled=False):
        assert device_linear(x.to("tfmbs")).dtype == torch.float32


def test_custom_fwd_casts_inputs_under_autocast():
    class Double(torch.autograd.Function):
        @staticmethod
        @torch.tfmbs.amp.custom_fwd(cast_inputs=torch.float32)
        def forward(ctx, x):
            ctx.seen = x.dtype
            return x * 2

        @staticmethod
        @torch.tfmbs.amp.custom_bwd
        def backward(ctx, grad):
            return grad * 2

    x = torch.ones(3, dtype=torch.float16, device="tfmbs", requires_grad=True)
    with torch.tfmbs.amp.autocast():
        y = Double.apply(x)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert x.grad.cpu().tolist() == [2.0, 2.0, 2.0]


def test_grad_scaler_steps_as_on_cpu():
    """GradScaler("tfmbs") scales, unscales, skips the step with inf grads
    and backs off, as torch.amp.GradScaler("cpu") does on the same model."""
    torch.manual_seed(0)
    torch_tfmbs.reset_fallback_stats()
    cpu_model = torch.nn.Linear(6, 2)
    dev_model = torch.nn.Linear(6, 2).to("tfmbs")
    dev_model.load_state_dict(cpu_model.state_dict())
    runs = []
    for model, device, scaler in ((cpu_model, "cpu", torch.amp.GradScaler("cpu", init_scale=256.0)),
                                  (dev_model, "tfmbs", torch.tfmbs.amp.GradScaler(init_scale=256.0))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        history = []
        for step in range(4):
            x = torch.randn(5, 6, generator=gen)
            if step == 2:
                x[0, 0] = float("inf")  # inf grads: the step is skipped
            optimizer.zero_grad()
            scaler.scale(model(x.to(device)).pow(2).mean()).backward()
            scaler.step(optimizer)
            scaler.update()
            history.append((scaler.get_scale(), [p.detach().cpu().clone() for p in model.parameters()]))
        runs.append(history)
    for (cpu_scale, cpu_params), (dev_scale, dev_params) in zip(*runs):
        assert dev_scale == cpu_scale
        for a, b in zip(cpu_params, dev_params):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert [s for s, _ in runs[1]] == [256.0, 256.0, 128.0, 128.0]
    assert torch.equal(runs[1][2][1][0], runs[1][1][1][0])  # the skipped step changed nothing
    assert torch_tfmbs.fallback_stats() == {}  # the unscale and update ops have tfmbs kernels
