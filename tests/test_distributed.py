"""torch.distributed on tfmbs (torch_tfmbs/distributed.py): Gloo over the
tensors' own memory. Two processes over 127.0.0.1 check each collective
against the value computed on CPU from every rank's inputs, and DDP / FSDP2
training against one process training on the whole batch."""
import datetime
import gc
import os
import socket
import subprocess
import sys
import textwrap
import time
import weakref

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

import torch_tfmbs
from torch_tfmbs import distributed as tfmbs_dist

WORLD = 2
DEADLINE = 90  # seconds for one multi-process test: a hang fails instead of blocking CI
GROUP_TIMEOUT = datetime.timedelta(seconds=30)  # a collective missing its peer raises first


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, fn, port, args):
    # One TCP store for the whole test, rank 0 serving it; each group takes
    # a prefix of it (init_group), so a rank that re-initializes early cannot
    # meet the previous group's keys or its closing server.
    store = dist.TCPStore("127.0.0.1", port, WORLD, is_master=rank == 0, timeout=GROUP_TIMEOUT)
    torch.tfmbs.set_device(rank)  # each rank its own fabric, as each its own GPU
    fn(rank, store, *args)
    # DDP and FSDP leave reference cycles that hold process-group work: left
    # to the interpreter's last collection, Gloo's threads may drop it there,
    # which needs the GIL, and the rank aborts at exit (torch's own hazard,
    # see CPU_ONLY_SCRIPT). Collect them while the interpreter runs.
    gc.collect()


def init_group(rank, store, name, **kwargs):
    dist.init_process_group(store=dist.PrefixStore(name, store), rank=rank, world_size=WORLD,
                            timeout=GROUP_TIMEOUT, **kwargs)


def run_ranks(fn, *args):
    """fn(rank, store, *args) in WORLD spawned processes; a failing rank fails the
    test with its traceback, and a rank still running at DEADLINE is killed."""
    context = mp.start_processes(_rank_main, args=(fn, free_port(), args), nprocs=WORLD,
                                 join=False, start_method="spawn")
    end = time.monotonic() + DEADLINE
    try:
        while not context.join(timeout=max(end - time.monotonic(), 0.1)):
            if time.monotonic() >= end:
                raise TimeoutError(f"{fn.__name__}: ranks still running after {DEADLINE} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()


def rank_input(rank, shape=(6,), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(1000 * seed + rank))


def all_inputs(shape=(6,), seed=0):
    return [rank_input(r, shape, seed) for r in range(WORLD)]


def rank_device():
    return torch.device("tfmbs", torch.tfmbs.current_device())


def on_device(t):
    return t.to(rank_device())


def assert_on_device_equal(t, expected, exact=False):
    assert t.device == rank_device(), t.device
    if exact:
        assert torch.equal(t.cpu(), expected), (t.cpu(), expected)
    else:
        torch.testing.assert_close(t.cpu(), expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ collectives

def _check_all_reduce(rank):
    stack = torch.stack(all_inputs())
    expected = {dist.ReduceOp.SUM: stack.sum(0), dist.ReduceOp.AVG: stack.mean(0),
                dist.ReduceOp.MIN: stack.min(0).values, dist.ReduceOp.MAX: stack.max(0).values,
                dist.ReduceOp.PRODUCT: stack.prod(0)}
    for op, want in expected.items():
        t = on_device(rank_input(rank))
        address = t.data_ptr()
        dist.all_reduce(t, op=op)
        assert t.data_ptr() == address  # in place, in the caller's device memory
        assert_on_device_equal(t, want)


def _check_zero_copy(rank):
    t = on_device(rank_input(rank, (1 << 16,)))
    torch_tfmbs.fabric.reset_profile()
    torch_tfmbs.reset_fallback_stats()
    dist.all_reduce(t)
    counts = torch_tfmbs.fabric.profile_detailed()
    assert (counts["bytes_h2d"], counts["bytes_d2h"]) == (0, 0)
    assert torch_tfmbs.fallback_stats() == {}


def _check_async(rank):
    t = on_device(rank_input(rank))
    work = dist.all_reduce(t, async_op=True)
    work.wait()
    assert work.is_completed()
    value = work.get_future().value()
    assert len(value) == 1 and value[0] is t  # the caller's tensor, not a CPU view of it
    assert_on_device_equal(t, sum(all_inputs()))
    # Gloo's future for all_gather_single holds the output's chunks: here views of the tfmbs output.
    out = on_device(torch.empty(WORLD * 6))
    work = dist.all_gather_single(out, on_device(rank_input(rank)), async_op=True)
    work.wait()
    assert_on_device_equal(out, torch.cat(all_inputs()), exact=True)
    chunks = work.get_future().value()
    assert [c.device.type for c in chunks] == ["tfmbs"] * WORLD
    assert [c.data_ptr() for c in chunks] == [out[i * 6].data_ptr() for i in range(WORLD)]


def _check_broadcast_and_gathers(rank):
    inputs = all_inputs()
    t = on_device(rank_input(rank))
    dist.broadcast(t, src=1)
    assert_on_device_equal(t, inputs[1], exact=True)

    outs = [on_device(torch.empty(6)) for _ in range(WORLD)]
    dist.all_gather(outs, on_device(inputs[rank]))
    for out, want in zip(outs, inputs):
        assert_on_device_equal(out, want, exact=True)

    out = on_device(torch.empty(WORLD * 6))
    dist.all_gather_single(out, on_device(inputs[rank]))
    assert_on_device_equal(out, torch.cat(inputs), exact=True)

    gathered = [on_device(torch.empty(6)) for _ in range(WORLD)] if rank == 0 else None
    dist.gather(on_device(inputs[rank]), gathered, dst=0)
    if rank == 0:
        for out, want in zip(gathered, inputs):
            assert_on_device_equal(out, want, exact=True)

    pieces = [on_device(rank_input(r, seed=1)) for r in range(WORLD)] if rank == 1 else None
    out = on_device(torch.empty(6))
    dist.scatter(out, pieces, src=1)
    assert_on_device_equal(out, rank_input(rank, seed=1), exact=True)


def _check_reductions_to_parts(rank):
    # Rank r contributes rows[r]; part i of the result is the sum over ranks of rows[r][i].
    rows = [rank_input(r, (WORLD, 5), seed=2) for r in range(WORLD)]
    total = sum(rows)

    out = on_device(torch.empty(5))
    dist.reduce_scatter(out, [on_device(part) for part in rows[rank]])
    assert_on_device_equal(out, total[rank])

    out = on_device(torch.empty(5))
    dist.reduce_scatter_single(out, on_device(rows[rank].reshape(-1)))
    assert_on_device_equal(out, total[rank])

    t = on_device(rows[rank])
    dist.reduce(t, dst=0)
    if rank == 0:  # other ranks' tensors are Gloo's scratch, as on CPU
        assert_on_device_equal(t, total)


def _check_all_to_all(rank):
    # Rank r sends block i of its input to rank i.
    blocks = [rank_input(r, (WORLD, 3), seed=3) for r in range(WORLD)]
    out = on_device(torch.empty(WORLD, 3))
    dist.all_to_all_single(out, on_device(blocks[rank]))
    assert_on_device_equal(out, torch.stack([blocks[r][rank] for r in range(WORLD)]), exact=True)

    outs = [on_device(torch.empty(3)) for _ in range(WORLD)]
    dist.all_to_all(outs, [on_device(b) for b in blocks[rank]])
    for r, out in enumerate(outs):
        assert_on_device_equal(out, blocks[r][rank], exact=True)


def _check_point_to_point(rank):
    message = rank_input(0, seed=4)
    if rank == 0:
        dist.send(on_device(message), dst=1)
        dist.isend(on_device(message * 2), dst=1).wait()
        dist.send(on_device(message * 3), dst=1)
    else:
        got = on_device(torch.empty(6))
        dist.recv(got, src=0)
        assert_on_device_equal(got, message, exact=True)
        dist.irecv(got, src=0).wait()
        assert_on_device_equal(got, message * 2, exact=True)
        assert dist.recv(got) == 0  # from any source: the sender's rank
        assert_on_device_equal(got, message * 3, exact=True)


def _check_errors(rank):
    with pytest.raises(ValueError, match=r"one device, got tensors on cpu, tfmbs:\d"):
        dist.all_gather_single(torch.empty(WORLD * 6), on_device(rank_input(rank)))
    with pytest.raises(ValueError, match=r"one device, got tensors on cpu, tfmbs:\d"):
        dist.all_gather([torch.empty(6), on_device(torch.empty(6))], on_device(rank_input(rank)))
    # The wrong size: Gloo's own message, as for CPU tensors.
    with pytest.raises(RuntimeError, match=r"invalid tensor size"):
        dist.all_gather_single(on_device(torch.empty(WORLD * 6 + 1)), on_device(rank_input(rank)))


def _check_a_failed_collective_raises(rank):
    # Rank 1 never joins: rank 0's all_reduce raises Gloo's timeout, from the
    # async call too (a Work wrapping a future would return from wait()). A
    # group of its own, so that the failure leaves WORLD's pairs clean; the
    # short timeout is the op's, not the group's (a slow rank may connect late).
    group = dist.new_group()
    if rank == 0:
        options = dist.AllreduceOptions()
        options.timeout = datetime.timedelta(seconds=1)
        options.asyncOp = True
        with pytest.raises(RuntimeError, match="Timed out"):
            group.allreduce([on_device(torch.ones(4))], options).wait()
    dist.barrier()  # rank 1 keeps the group open meanwhile (closing it fails rank 0 sooner)
    dist.destroy_process_group(group)


def _check_cpu_tensors(rank):
    t = rank_input(rank)
    dist.all_reduce(t)
    torch.testing.assert_close(t, sum(all_inputs()), rtol=1e-6, atol=1e-6)


def _collectives(rank, store):
    # Every way to name the backend gives a group that takes both devices.
    for backend in (None, "tfmbs_gloo", "gloo", "cpu:gloo,tfmbs:tfmbs_gloo"):
        kwargs = {} if backend is None else {"backend": backend}
        init_group(rank, store, f"backend={backend}", **kwargs)
        try:
            for check in (_check_all_reduce, _check_zero_copy, _check_async,
                          _check_broadcast_and_gathers, _check_reductions_to_parts,
                          _check_all_to_all, _check_point_to_point, _check_errors,
                          _check_a_failed_collective_raises, _check_cpu_tensors):
                check(rank)
            dist.barrier()
        except Exception as e:
            raise AssertionError(f"backend={backend!r}") from e
        finally:
            dist.destroy_process_group()


def test_collectives_on_tfmbs_equal_cpu_references():
    run_ranks(_collectives)


# ----------------------------------------------------------------- DDP / FSDP2

STEPS = 3
LR = 0.1


class Net(nn.Module):
    """Two layers, and a head the forward may skip (find_unused_parameters)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)
        self.extra = nn.Linear(16, 4)

    def forward(self, x, use_extra):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h) + (self.extra(h) if use_extra else 0)


def make_net(perturb=False):
    torch.manual_seed(0)
    net = Net()
    if perturb:  # a rank that starts elsewhere: DDP broadcasts rank 0's weights
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
    return net


def batch(step):
    g = torch.Generator().manual_seed(50 + step)
    return torch.randn(WORLD * 4, 8, generator=g), torch.randn(WORLD * 4, 4, generator=g)


def reference_weights(use_extra):
    """One process, the whole batch, on CPU."""
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    for step in range(STEPS):
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.mse_loss(net(x, use_extra(step)), y).backward()
        opt.step()
    return {name: p.detach() for name, p in net.named_parameters()}


def shard(t, rank):
    return t.chunk(WORLD)[rank]


def _ddp(rank):
    net = make_net(perturb=rank == 1).to(rank_device())
    # A tiny bucket cap: several buckets, reduced one by one as their grads become ready.
    ddp = DDP(net, find_unused_parameters=True, bucket_cap_mb=1e-4)
    assert ddp._get_ddp_logging_data()["bucket_sizes"].count(",") >= 2
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)

    def use_extra(step):
        return step % 2 == 0

    for step in range(STEPS):
        x, y = (on_device(shard(t, rank)) for t in batch(step))
        opt.zero_grad()
        if step == 1:  # two micro-batches, the first one's gradients kept local
            with ddp.no_sync():
                (nn.functional.mse_loss(ddp(x[:2], use_extra(step)), y[:2]) / 2).backward()
            (nn.functional.mse_loss(ddp(x[2:], use_extra(step)), y[2:]) / 2).backward()
        else:
            nn.functional.mse_loss(ddp(x, use_extra(step)), y).backward()
        assert all(p.grad.device.type == "tfmbs" for p in net.parameters() if p.grad is not None)
        opt.step()
    expected = reference_weights(use_extra)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.detach().cpu(), expected[name],
                                   rtol=0, atol=1e-6, msg=lambda m: f"DDP {name}: {m}")


def _fsdp2(rank):
    net = make_net().to(rank_device())
    for layer in (net.fc1, net.fc2, net.extra):
        fully_shard(layer)
    fully_shard(net)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    for step in range(STEPS):
        x, y = (on_device(shard(t, rank)) for t in batch(step))
        opt.zero_grad()
        nn.functional.mse_loss(net(x, True), y).backward()
        opt.step()
    expected = reference_weights(lambda step: True)
    for name, p in net.named_parameters():
        local = p.to_local()
        assert local.device.type == "tfmbs" and local.numel() < expected[name].numel()
        torch.testing.assert_close(p.full_tensor().cpu(), expected[name], rtol=0, atol=1e-6,
                                   msg=lambda m: f"FSDP2 {name}: {m}")


def _training(rank, store):
    init_group(rank, store, "training")
    try:
        _ddp(rank)
        _fsdp2(rank)
    finally:
        dist.destroy_process_group()


def test_ddp_and_fsdp2_equal_one_process_on_the_whole_batch():
    run_ranks(_training)


# ------------------------------------------------------------- CPU-only users

CPU_ONLY_SCRIPT = textwrap.dedent("""
    import gc

    import torch
    import torch.distributed as dist

    # tfmbs was autoloaded and is the accelerator: what used to break init.
    assert torch.accelerator.current_accelerator().type == "tfmbs"
    dist.init_process_group()
    rank = dist.get_rank()
    t = torch.full((3,), float(rank + 1))
    dist.all_reduce(t)
    assert t.tolist() == [3.0, 3.0, 3.0], t
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
    model(torch.ones(1, 2)).sum().backward()
    print("rank", rank, "ok", flush=True)
    # DDP's reducer holds the group and sits in reference cycles: left to the
    # interpreter's last collection, Gloo's run-loop thread may drop work
    # there, which needs the GIL, and the process aborts ("terminate called
    # without an active exception"; torch's own Gloo group does it without
    # tfmbs too). Collect it while the interpreter runs.
    del model
    gc.collect()
    dist.destroy_process_group()
""")


def test_cpu_only_script_initializes_a_default_group(tmp_path):
    script = tmp_path / "cpu_only.py"
    script.write_text(CPU_ONLY_SCRIPT)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(WORLD))
    ranks = [subprocess.Popen([sys.executable, str(script)], env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(WORLD)]
    try:
        results = [p.communicate(timeout=DEADLINE) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    for r, (p, (out, err)) in enumerate(zip(ranks, results)):
        assert p.returncode == 0, err
        assert f"rank {r} ok" in out


def test_readme_ddp_example_trains_and_exits_cleanly():
    """examples/ddp_train.py under torchrun, as the README runs it: every rank
    ends with rank 0's weights and exits with 0 (not aborting at shutdown)."""
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                           "ddp_train.py")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={WORLD}", example], capture_output=True, text=True,
                       timeout=DEADLINE)
    assert p.returncode == 0, p.stderr[-3000:]
    for r in range(WORLD):
        assert f"rank {r}: 4353 weights on tfmbs:" in p.stdout and "equal to rank 0's" in p.stdout, p.stdout


# ------------------------------------------------------------- in one process

def test_registration():
    assert tfmbs_dist.BACKEND in dist.Backend.backend_list
    assert dist.Backend.default_device_backend_map["tfmbs"] == tfmbs_dist.BACKEND
    assert dist.Backend.default_device_backend_map["cpu"] == "gloo"


def test_every_c10d_privateuse1_kernel_is_ours():
    """torch's PrivateUse1 kernels hand tfmbs tensors to Gloo, which refuses
    them: a c10d op torch adds one for must be in OPS."""
    with_kernel = {s.name.removeprefix("c10d::") for s in torch._C._jit_get_all_schemas()
                   if s.name.startswith("c10d::")
                   and torch._C._dispatch_has_kernel_for_dispatch_key(s.name, "PrivateUse1")}
    assert with_kernel == set(tfmbs_dist.OPS)
    for name in tfmbs_dist.OPS:
        table = torch._C._dispatch_dump(f"c10d::{name}")
        line = next(l for l in table.splitlines() if l.startswith("PrivateUse1:"))
        assert "distributed.py" in line, line


def test_cpu_view_shares_memory_and_holds_the_tensor():
    t = torch.arange(12.0, device="tfmbs").reshape(3, 4)[:, 1:3]
    view = tfmbs_dist.cpu_view(t)
    assert view.device.type == "cpu" and view.data_ptr() == t.data_ptr()
    assert view.stride() == t.stride() and torch.equal(view, t.cpu())
    view.mul_(-1)
    assert torch.equal(t.cpu(), -torch.arange(12.0).reshape(3, 4)[:, 1:3])
    alive = weakref.ref(t)
    del t
    gc.collect()
    assert alive() is not None  # held by the view, as a CPU tensor holds its storage
    del view
    gc.collect()
    assert alive() is None
