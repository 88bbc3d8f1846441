"""No crash, no hang, no silent wrong answer: freed storage, fork, stale
frames, the device generator, SDPA mask gradients, device guards and
indices, packing input, the profiler's scope and the OOM message. Each
test checks CPU's answer (or the message) and that device data survives."""
import threading

import pytest
import torch
import torch.nn.functional as F

import torch_tfmbs  # noqa: F401
from torch_tfmbs import quant

from conftest import run_python

op = torch.ops.tfmbs.ternary_linear
NOT_ALLOCATED = "data is not allocated yet"


def layer(m, k, seed):
    g = torch.Generator().manual_seed(seed)
    trits, scale = quant.ternarize(torch.randn(m, k, generator=g))
    return quant.pack_pt5(trits), scale


# ------------------------------------------------------------ freed storage

def test_freed_packed_weight_raises_cpus_error_and_keeps_device_data():
    packed, scale = layer(8, 20, 0)
    x = torch.randn(3, 20).to("tfmbs")
    keep = torch.arange(5.0).to("tfmbs")
    p = packed.to("tfmbs")
    p.untyped_storage().resize_(0)  # as FSDP-style offloading frees it
    with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
        op(x, p, scale.to("tfmbs"), None, 8, 20)
    with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
        torch.ops.tfmbs.prepare_frame(p, 8, 20)
    with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
        p + 1  # any op that reads it
    cpu_p = packed.clone()
    cpu_p.untyped_storage().resize_(0)
    with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
        op(x.cpu(), cpu_p, scale, None, 8, 20)
    assert keep.cpu().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and x.isfinite().all().item()


def test_copy_to_or_from_a_freed_cpu_tensor_raises():
    # CPU's own copy kernel reads a freed storage's null pointer (it crashes
    # there): a copy between tfmbs and such a tensor raises instead, and
    # leaves the device tensor as it was.
    freed = torch.randn(8)
    freed.untyped_storage().resize_(0)
    with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
        freed.to("tfmbs")
    dev = torch.arange(8.0).to("tfmbs")
    with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
        dev.copy_(freed)
    with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
        freed.copy_(dev)
    assert dev.cpu().tolist() == [float(i) for i in range(8)]


def test_freed_input_scale_or_bias_raises_cpus_error():
    # The op reads float32 operands in place: each is checked first.
    packed, scale = layer(8, 20, 1)
    args = {"x": torch.randn(3, 20), "scale": scale, "bias": torch.randn(8)}
    for device in ("cpu", "tfmbs"):
        for freed in args:
            operands = {name: t.to(device, copy=True) for name, t in args.items()}
            operands[freed].untyped_storage().resize_(0)
            with pytest.raises(RuntimeError, match=NOT_ALLOCATED):
                op(operands["x"], packed.to(device), operands["scale"], operands["bias"], 8, 20)


# --------------------------------------------------------------------- fork

def test_dataloader_workers_fail_at_once_with_a_clear_error():
    code = (
        "import time, torch, torch_tfmbs\n"
        "from torch.utils.data import DataLoader, Dataset\n"
        "class D(Dataset):\n"
        "    def __init__(self): self.x = torch.randn(16, 4).to('tfmbs')\n"
        "    def __len__(self): return 16\n"
        "    def __getitem__(self, i): return self.x[i]\n"
        "ds = D()\n"
        "try:\n"
        "    list(DataLoader(ds, batch_size=4, num_workers=2))\n"
        "except RuntimeError as e:\n"
        "    print('raised', 'forked subprocess' in str(e), 'dataset on the CPU' in str(e))\n"
        "print('parent ok', ds.x.shape, torch.tfmbs._is_in_bad_fork())\n")
    r = run_python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["raised True True", "parent ok torch.Size([16, 4]) False"]


# ------------------------------------------------------------- stale frames

def reference(x, packed, scale, m, k):
    return op(x.cpu(), packed.cpu(), scale.cpu(), None, m, k)


def test_new_weight_at_a_freed_address_is_not_served_a_stale_frame():
    m, k = 16, 40
    x = torch.randn(4, k)
    for seed in range(6):  # each new packed tensor tends to land on the last one's block
        packed, scale = layer(m, k, seed)
        p = packed.to("tfmbs")
        y = op(x.to("tfmbs"), p, scale.to("tfmbs"), None, m, k)
        assert torch.equal(y.cpu(), reference(x, packed, scale, m, k))
        del p, y


def test_writes_in_inference_mode_are_seen():
    m, k = 16, 40
    x = torch.randn(2, k)
    a, scale = layer(m, k, 1)
    b, _ = layer(m, k, 2)
    with torch.inference_mode():
        p = a.to("tfmbs")
        y1 = op(x.to("tfmbs"), p, scale.to("tfmbs"), None, m, k)
        p.copy_(b.to("tfmbs"))
        y2 = op(x.to("tfmbs"), p, scale.to("tfmbs"), None, m, k)
        y3 = op(x.to("tfmbs"), p, scale.to("tfmbs"), None, m, k)
    assert torch.equal(y1.cpu(), reference(x, a, scale, m, k))
    assert torch.equal(y2.cpu(), reference(x, b, scale, m, k))
    assert torch.equal(y3.cpu(), y2.cpu())


def test_writes_through_a_tensor_sharing_the_storage_by_set_are_seen():
    m, k = 16, 40
    x = torch.randn(2, k).to("tfmbs")
    a, scale = layer(m, k, 3)
    b, _ = layer(m, k, 4)
    s = scale.to("tfmbs")
    p = a.to("tfmbs")
    y1 = op(x, p, s, None, m, k)
    other = torch.empty(0, dtype=torch.uint8, device="tfmbs").set_(p)
    other.copy_(b.to("tfmbs"))  # p's version counter does not move
    del other  # and the writer is gone before the next call
    y2 = op(x, p, s, None, m, k)
    assert torch.equal(y1.cpu(), reference(x, a, scale, m, k))
    assert torch.equal(y2.cpu(), reference(x, b, scale, m, k))
    p.untyped_storage().copy_(a.to("tfmbs").untyped_storage())  # through the storage object
    assert torch.equal(op(x, p, s, None, m, k).cpu(), y1.cpu())


def test_in_place_writes_and_views_still_reuse_tracked_frames():
    m, k = 16, 40
    x = torch.randn(2, k).to("tfmbs")
    a, scale = layer(m, k, 5)
    b, _ = layer(m, k, 6)
    s = scale.to("tfmbs")
    p = a.to("tfmbs")
    torch_tfmbs.fabric.reset_profile()
    op(x, p, s, None, m, k)
    op(x, p, s, None, m, k)
    p.view(-1)[:].copy_(b.to("tfmbs"))  # a view shares p's version counter
    y = op(x, p, s, None, m, k)
    d = torch_tfmbs.fabric.profile_detailed()
    assert (d["residency_hits"], d["residency_misses"]) == (1, 2)
    assert torch.equal(y.cpu(), reference(x, b, scale, m, k))


def test_non_contiguous_and_expanded_packed_weights_agree_with_cpu():
    m, k = 8, 20
    packed, scale = layer(m, k, 7)
    x = torch.randn(3, k)
    strided = torch.stack([packed, torch.zeros_like(packed)], 1)[:, 0]
    assert not strided.is_contiguous()
    expanded = packed[:1].expand(packed.numel())
    for p in (strided, expanded):
        want = op(x, p, scale, None, m, k)
        got = op(x.to("tfmbs"), _device_like(p), scale.to("tfmbs"), None, m, k)
        assert torch.equal(got.cpu(), want)


def _device_like(p):
    """p's geometry (strides included) over a device copy of its storage."""
    base = p._base if p._base is not None else p
    dev = base.to("tfmbs")
    return dev.as_strided(p.shape, p.stride(), p.storage_offset())


# ---------------------------------------------------------------------- RNG

RANDOM_OPS = {
    "rand": lambda d: torch.rand(5, 3, device=d),
    "randn": lambda d: torch.randn(7, device=d),
    "randint": lambda d: torch.randint(0, 100, (6,), device=d),
    "normal_": lambda d: torch.empty(9, device=d).normal_(2.0, 3.0),
    "uniform_": lambda d: torch.empty(9, device=d).uniform_(-1, 1),
    "bernoulli_": lambda d: torch.empty(9, device=d).bernoulli_(0.3),
    "random_": lambda d: torch.empty(9, device=d).random_(0, 50),
    "exponential_": lambda d: torch.empty(9, device=d).exponential_(),
    "randperm": lambda d: torch.randperm(20, device=d),
    "multinomial": lambda d: torch.multinomial(torch.tensor([0.1, 0.5, 0.4], device=d), 8, True),
    "dropout": lambda d: F.dropout(torch.arange(1.0, 41.0, device=d), 0.4, training=True),
}


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_seeded_random_ops_give_cpus_values_and_leave_cpus_generator_alone(name):
    fn = RANDOM_OPS[name]
    torch.manual_seed(1234)
    want = fn("cpu")
    torch.manual_seed(1234)
    cpu_first = torch.rand(4)
    torch.manual_seed(1234)  # seeds CPU's and every tfmbs device's generator
    got = fn("tfmbs")
    assert got.device.type == "tfmbs" and torch.equal(got.cpu(), want)
    assert torch.equal(torch.rand(4), cpu_first)  # the tfmbs draw left CPU's stream alone


def test_device_generator_seed_and_state_replay():
    torch.tfmbs.manual_seed(7)
    a = torch.randn(6, device="tfmbs")
    torch.tfmbs.manual_seed(7)
    assert torch.equal(torch.randn(6, device="tfmbs").cpu(), a.cpu())
    state = torch.tfmbs.get_rng_state()
    b = torch.rand(5, device="tfmbs")
    torch.tfmbs.set_rng_state(state)
    assert torch.equal(torch.rand(5, device="tfmbs").cpu(), b.cpu())
    torch.tfmbs.manual_seed(7)
    cpu_state = torch.get_rng_state()
    torch.rand(100, device="tfmbs")
    assert torch.equal(torch.get_rng_state(), cpu_state)


def test_fork_rng_restores_the_device_generator():
    torch.manual_seed(3)
    with torch.random.fork_rng(device_type="tfmbs"):
        torch.rand(10, device="tfmbs")
    after = torch.rand(3, device="tfmbs")
    torch.manual_seed(3)
    assert torch.equal(torch.rand(3, device="tfmbs").cpu(), after.cpu())


def test_dropout_backward_matches_cpu():
    x_cpu = torch.randn(50, requires_grad=True)
    x_dev = x_cpu.detach().to("tfmbs").requires_grad_()
    torch.manual_seed(11)
    F.dropout(x_cpu, 0.3).sum().backward()
    torch.manual_seed(11)
    F.dropout(x_dev, 0.3).sum().backward()
    torch.testing.assert_close(x_dev.grad.cpu(), x_cpu.grad, rtol=1e-6, atol=0)
    assert torch.equal(x_dev.grad.cpu() == 0, x_cpu.grad == 0)


# --------------------------------------------------------------------- SDPA

def test_sdpa_float_mask_that_requires_grad_gets_cpus_gradient():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    mask = torch.randn(2, 3, 5, 5, generator=g)
    grads = []
    for d in ("cpu", "tfmbs"):
        leaves = [t.detach().to(d).requires_grad_() for t in (q, k, v, mask)]
        F.scaled_dot_product_attention(*leaves[:3], attn_mask=leaves[3]).square().sum().backward()
        grads.append([t.grad.cpu() if t.grad is not None else None for t in leaves])
    assert grads[1][3] is not None
    for want, got in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------- devices and indices

def test_storage_resize_allocates_on_the_storages_device(clean_memory):
    torch.tfmbs.set_device(0)
    t = torch.ones(4, device="tfmbs:1")
    before = [torch.tfmbs.memory_allocated(i) for i in (0, 1)]
    t.untyped_storage().resize_(64 << 20)
    after = [torch.tfmbs.memory_allocated(i) for i in (0, 1)]
    assert after[0] == before[0] and after[1] - before[1] >= (64 << 20) - 64
    assert t.cpu().tolist() == [1.0] * 4 and t.device == torch.device("tfmbs:1")
    del t


@pytest.mark.parametrize("index", [2, 256, 257, -2, 1 << 40])
def test_device_indices_never_wrap(index):
    current = torch.tfmbs.current_device()
    for call in (torch.tfmbs.set_device, torch.tfmbs.memory_allocated,
                 torch.tfmbs.get_rng_state, torch_tfmbs.fabric.profile):
        with pytest.raises(IndexError, match=f"invalid device index {index}"):
            call(index)
    assert torch.tfmbs.current_device() == current


# ------------------------------------------------------------------ packing

@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32])
def test_pack_rejects_every_non_trit(dtype):
    bad = torch.tensor([0, 1, 255 if dtype == torch.uint8 else -2], dtype=dtype)
    for pack in (quant.pack_pt5, quant.pack_t2b):
        for d in ("cpu", "tfmbs"):
            with pytest.raises(ValueError, match="element 2 is .*ternary values are -1, 0 and 1"):
                pack(bad.to(d))


def test_packed_size_check_does_not_overflow():
    x = torch.randn(1, 4)
    with pytest.raises(ValueError, match="overflows"):
        op(x, torch.empty(0, dtype=torch.uint8), torch.ones(()), None, 1 << 62, 4)
    with pytest.raises(ValueError, match="overflows"):
        op(x.to("tfmbs"), torch.empty(0, dtype=torch.uint8, device="tfmbs"),
           torch.ones((), device="tfmbs"), None, 1 << 62, 4)


# ----------------------------------------------------------------- profiler

def test_profiler_rows_are_this_threads_since_start():
    packed, scale = layer(8, 16, 9)
    args = (packed.to("tfmbs"), scale.to("tfmbs"), None, 8, 16)
    x = torch.randn(2, 16).to("tfmbs")
    with torch_tfmbs.profiler() as outer:
        op(x, *args)  # before the inner profiler starts
        other_started, stop = threading.Event(), threading.Event()

        def other_thread():
            with torch_tfmbs.profiler():
                other_started.set()
                while not stop.is_set():
                    op(x, *args)

        t = threading.Thread(target=other_thread)
        t.start()
        other_started.wait()
        with torch_tfmbs.profiler() as inner:
            op(x, *args)
            op(x, *args)
        stop.set()
        t.join()
    assert [r["op"] for r in inner.rows] == ["tfmbs::ternary_linear"] * 2
    assert len(outer.rows) == 3


# ---------------------------------------------------------------------- OOM

def test_oom_message_reports_cached_bytes_and_fragmentation():
    code = (
        "import torch, torch_tfmbs\n"
        "MiB = 1 << 20\n"
        "blocks = [torch.empty(2 * MiB, dtype=torch.uint8, device='tfmbs') for _ in range(4)]\n"
        "del blocks[2], blocks[0]\n"
        "try:\n"
        "    torch.empty(4 * MiB, dtype=torch.uint8, device='tfmbs')\n"
        "except torch.OutOfMemoryError as e:\n"
        "    print(e)\n"
        "print(blocks[0].shape, blocks[1].shape)\n")
    r = run_python(code, env={"TFMBS_MEMORY": "8MiB", "TFMBS_NUM_FABRICS": "1"})
    assert r.returncode == 0, r.stderr
    message = r.stdout
    assert "tried to allocate 4.00 MiB" in message and "4.00 MiB allocated" in message, message
    assert "4.00 MiB free, but not in one piece" in message and "fragmentation" in message, message
    assert "torch.Size([2097152]) torch.Size([2097152])" in message
