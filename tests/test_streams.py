"""Streams on tfmbs (torch_tfmbs/streams.py, csrc/device/StreamWork.h):
work on a stream runs in order, work on two streams overlaps, events and
wait_stream order them, synchronize waits, non_blocking copies from pinned
memory are queued, and memory used by queued work is not reused before the
work has run. torch.tfmbs._sleep keeps a stream busy (torch.cuda._sleep's
counterpart), so that queued work is visibly behind the host; every result
is compared with CPU's."""
import copy

import pytest
import torch

from torch_tfmbs import quant

op = torch.ops.tfmbs.ternary_linear
BUSY_MS = 400  # long beside the host work between two checks


def layer(m, k, seed):
    g = torch.Generator().manual_seed(seed)
    trits, scale = quant.ternarize(torch.randn(m, k, generator=g))
    return quant.pack(trits, "pt5"), scale, torch.randn(m, generator=g)


class Layer:
    """A ternary layer on CPU and on tfmbs:0."""

    def __init__(self, m, k, seed):
        self.m, self.k = m, k
        packed, scale, bias = layer(m, k, seed)
        self.cpu = (packed, scale, bias)
        self.dev = tuple(t.to("tfmbs") for t in self.cpu)

    def __call__(self, x):
        params = self.dev if x.device.type == "tfmbs" else self.cpu
        return op(x, *params, self.m, self.k)


@pytest.fixture
def layers():
    return Layer(96, 64, 1), Layer(64, 96, 2)


def test_stream_defaults_to_the_current_device():
    s = torch.tfmbs.Stream()
    assert type(s) is torch.Stream and s.device == torch.device("tfmbs:0") and s.stream_id != 0
    assert s != torch.tfmbs.Stream()  # each is a new stream
    with torch.tfmbs.device(1):
        assert torch.tfmbs.Stream().device == torch.device("tfmbs:1")
    assert torch.tfmbs.Stream("tfmbs:1", priority=-1).device == torch.device("tfmbs:1")
    with pytest.raises(ValueError, match="expected a tfmbs device"):
        torch.tfmbs.Stream("cpu")


def test_current_stream_follows_the_stream_context_per_device_and_thread():
    import threading
    s, s1 = torch.tfmbs.Stream(), torch.tfmbs.Stream(1)
    default = torch.tfmbs.default_stream()
    assert default.stream_id == 0 and torch.tfmbs.current_stream() == default
    assert torch.tfmbs.current_stream() == torch.accelerator.current_stream()
    seen = []
    with torch.tfmbs.stream(s):
        assert torch.tfmbs.current_stream() == s
        assert torch.tfmbs.current_stream(1) == torch.tfmbs.default_stream(1)
        other = threading.Thread(target=lambda: seen.append(torch.tfmbs.current_stream()))
        other.start()
        other.join()
        with torch.tfmbs.stream(s1):
            assert torch.tfmbs.current_stream(1) == s1 and torch.tfmbs.current_stream(0) == s
        with torch.tfmbs.stream(None):  # as torch.cuda.stream(None): no change
            assert torch.tfmbs.current_stream() == s
    assert seen == [default]  # the current stream is per thread
    assert torch.tfmbs.current_stream() == default
    torch.tfmbs.set_stream(s)
    assert torch.tfmbs.current_stream() == s
    torch.tfmbs.set_stream(default)


def test_work_on_a_side_stream_runs_in_order_after_the_host_returns(layers):
    first, second = layers
    x = torch.randn(5, 64)
    xd = x.to("tfmbs")
    s = torch.tfmbs.Stream()
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        h = first(xd)  # queued behind the sleep
        y = second(h)  # reads h: runs after it
        assert not s.query()  # the host got both results back before they were computed
        doubled = y * 2  # an op of the host path: runs after the stream's work
        assert s.query()
    assert torch.equal(doubled.cpu(), second(first(x)) * 2)


def test_two_streams_overlap_and_events_order_them(layers):
    first, second = layers
    x = torch.randn(3, 64)
    xd = x.to("tfmbs")
    slow, fast = torch.tfmbs.Stream(), torch.tfmbs.Stream()
    with torch.tfmbs.stream(slow):
        torch.tfmbs._sleep(5 * BUSY_MS)
        h = first(xd)
        done = torch.tfmbs.Event()
        done.record()
    with torch.tfmbs.stream(fast):
        y_fast = first(xd)
    fast.synchronize()  # fast's work is not behind slow's
    assert not slow.query() and not done.query()
    with torch.tfmbs.stream(fast):
        fast.wait_event(done)  # fast's next work waits for h
        y = second(h)
    fast.synchronize()
    assert slow.query() and done.query()
    assert torch.equal(y_fast.cpu(), first(x))
    assert torch.equal(y.cpu(), second(first(x)))


def test_wait_stream_and_synchronize(layers):
    first, _ = layers
    x = torch.randn(2, 64)
    s = torch.tfmbs.Stream()
    xd = x.to("tfmbs")
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        y = first(xd)
    torch.tfmbs.current_stream().wait_stream(s)
    assert torch.equal(y.cpu(), first(x))  # the default stream waited for s
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        y = first(xd)
    torch.tfmbs.synchronize()
    assert s.query()
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
    torch.accelerator.synchronize()  # the device guard's synchronizeDevice
    assert s.query()
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        end = torch.tfmbs.Event()
        end.record()
    end.synchronize()
    assert s.query() and end.query()


def test_timing_events_measure_when_the_stream_reached_them():
    s = torch.tfmbs.Stream()
    start, end = torch.tfmbs.Event(enable_timing=True), torch.tfmbs.Event(enable_timing=True)
    with torch.tfmbs.stream(s):
        start.record()
        torch.tfmbs._sleep(BUSY_MS / 4)
        end.record()
        with pytest.raises(RuntimeError, match="Both events must be completed"):
            start.elapsed_time(end)
    end.synchronize()
    assert start.elapsed_time(end) >= BUSY_MS / 4
    untimed = torch.tfmbs.Event()
    untimed.record()
    with pytest.raises(ValueError, match="enable_timing=True"):
        start.elapsed_time(untimed)


def test_memory_used_by_queued_work_is_not_reused_before_it_ran(layers, clean_memory):
    first, _ = layers
    x = torch.randn(256, 64)
    xd = x.to("tfmbs")
    first(xd)  # builds the layer's resident frame, so that only tensors come and go below
    address, size = xd.data_ptr(), xd.nbytes
    s = torch.tfmbs.Stream()
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        y = first(xd)
    xd.record_stream(s)
    held = torch.tfmbs.memory_allocated()
    del xd  # still used by the queued op
    assert torch.tfmbs.memory_allocated() == held
    other = torch.full((256, 64), 7.0, device="tfmbs")  # same size: would take the block if it were free
    assert other.data_ptr() != address
    s.synchronize()
    assert torch.tfmbs.memory_allocated() == held - size + other.nbytes  # back once the op ran
    assert torch.equal(y.cpu(), first(x)) and torch.equal(other.cpu(), torch.full((256, 64), 7.0))


def test_non_blocking_copies_from_pinned_memory_are_queued():
    s = torch.tfmbs.Stream()
    pinned = torch.arange(4096.0).pin_memory()
    dst = torch.zeros(4096, device="tfmbs")
    back = torch.zeros(4096).pin_memory()
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        dst.copy_(pinned, non_blocking=True)
        back.copy_(dst, non_blocking=True)  # device to pinned host, after the copy in
        assert not s.query() and torch.equal(back, torch.zeros(4096))  # not run yet
    s.synchronize()
    assert torch.equal(back, pinned) and torch.equal(dst.cpu(), pinned)


def test_non_blocking_copy_on_the_default_stream_runs_before_the_next_op():
    pinned = torch.arange(1000.0).pin_memory()
    torch.tfmbs._sleep(BUSY_MS)  # the default stream is busy
    d = pinned.to("tfmbs", non_blocking=True)
    assert not torch.tfmbs.current_stream().query()
    assert torch.equal((d + 1).cpu(), torch.arange(1000.0) + 1)  # the op waited for the copy


def test_blocking_copies_and_pageable_memory_copy_at_once():
    s = torch.tfmbs.Stream()
    pageable = torch.arange(100.0)
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        d = pageable.to("tfmbs", non_blocking=True)  # pageable: as CUDA, not asynchronous
        assert s.query()  # it waited for the stream, then copied
    pageable.zero_()
    assert torch.equal(d.cpu(), torch.arange(100.0))


def test_a_bad_queued_copy_raises_when_called_and_queues_nothing():
    s = torch.tfmbs.Stream()
    dst = torch.zeros(4, device="tfmbs")
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        with pytest.raises(RuntimeError, match="must match the size"):
            dst.copy_(torch.ones(5).pin_memory(), non_blocking=True)
        with pytest.raises(RuntimeError, match="more than one element"):
            dst.expand(3, 4).copy_(torch.ones(3, 4).pin_memory(), non_blocking=True)
    s.synchronize()
    assert torch.equal(dst.cpu(), torch.zeros(4))


FAILING_SCRIPT = """
import torch, torch_tfmbs
from torch_tfmbs import quant
m = k = 2048
x = torch.randn(2, k, device="tfmbs")
one = torch.tensor(1.0, device="tfmbs")
keep = torch.full((1024,), 5.0, device="tfmbs")
packed = quant.pack_pt5(torch.randint(-1, 2, (m, k), dtype=torch.int8)).to("tfmbs")
fill = []  # the pool full of small blocks: room for the output, not for the 1 MiB frame
while True:
    try:
        fill.append(torch.empty(2**16, dtype=torch.uint8, device="tfmbs"))
    except torch.OutOfMemoryError:
        break
del fill[-1]
streams = [torch.tfmbs.Stream() for _ in range(7)]
s, twin, bystander = streams[0], streams[3], streams[6]  # one worker serves the three
with torch.tfmbs.stream(s):
    if PENDING:  # still queued when the other streams wait for it
        torch.tfmbs._sleep(300)
    y = torch.ops.tfmbs.ternary_linear(x, packed, one, None, m, k)
    print("queued")
while not PENDING and not s.query():  # else already failed when they wait
    pass
torch.tfmbs.current_stream().wait_stream(s)
twin.wait_stream(s)
with torch.tfmbs.stream(bystander):  # did not wait for s: not its failure
    print("bystander:", torch.equal(keep.cpu(), torch.full((1024,), 5.0)))


def on_twin():
    with torch.tfmbs.stream(twin):
        return y.cpu()


for name, wait in (("default stream", y.cpu), ("twin stream", on_twin), ("side stream", s.synchronize)):
    try:
        wait()
        print(name, "did not raise")
    except torch.OutOfMemoryError as e:
        print(name, "raised:", "weight frame" in str(e))
s.synchronize()  # raised once on each
print("kept:", torch.equal(keep.cpu(), torch.full((1024,), 5.0)))
"""


@pytest.mark.parametrize("pending", [True, False])
def test_a_failure_in_queued_work_is_raised_by_the_next_wait(pending):
    from conftest import run_python
    r = run_python(f"PENDING = {pending}\n" + FAILING_SCRIPT, env={"TFMBS_MEMORY": "4MiB", "TFMBS_NUM_FABRICS": "1"})
    assert r.returncode == 0, r.stderr
    # Streams that waited for it raise it too: what they read next is the failed op's output.
    assert r.stdout.split("\n")[:6] == ["queued", "bystander: True", "default stream raised: True",
                                        "twin stream raised: True", "side stream raised: True",
                                        "kept: True"]


FORK_SCRIPT = """
import os, torch, torch_tfmbs
s = torch.tfmbs.Stream()
with torch.tfmbs.stream(s):
    torch.tfmbs._sleep(300)
pid = os.fork()
if pid == 0:  # the stream's worker did not survive the fork
    for wait in (torch.tfmbs.synchronize, s.synchronize, s.query, torch.tfmbs._await_streams):
        try:
            wait()
            print("returned")
        except RuntimeError as e:
            print("raised:", "fork" in str(e))
    os._exit(0)
os.waitpid(pid, 0)
torch.tfmbs.synchronize()
print("parent done:", s.query())
"""


def test_streams_in_a_forked_child_raise_instead_of_hanging():
    from conftest import run_python
    r = run_python(FORK_SCRIPT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:5] == ["raised: True"] * 4 + ["parent done: True"]


def test_torch_compile_on_a_side_stream_waits_for_queued_work(layers):
    first, _ = layers

    def f(x):
        return torch.relu(first(x)) * 3 + 1  # a fabric op, then an inductor kernel on its result

    compiled = torch.compile(f)
    x = torch.randn(4, 64)
    s = torch.tfmbs.Stream()
    compiled(x.to("tfmbs"))  # compile outside the timed region
    xd = x.to("tfmbs")
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        y = compiled(xd)
    s.synchronize()
    assert torch.equal(y.cpu(), f(x))


def test_training_step_on_a_side_stream_equals_cpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    device_model = copy.deepcopy(model).to("tfmbs")
    x, target = torch.randn(8, 16), torch.randn(8, 4)
    loss = torch.nn.functional.mse_loss(model(x), target)
    loss.backward()
    s = torch.tfmbs.Stream()
    with torch.tfmbs.stream(s):
        xd, td = x.pin_memory().to("tfmbs", non_blocking=True), target.pin_memory().to("tfmbs", non_blocking=True)
        device_loss = torch.nn.functional.mse_loss(device_model(xd), td)
        device_loss.backward()
    torch.tfmbs.current_stream().wait_stream(s)
    assert torch.equal(device_loss.cpu(), loss.detach())
    for p, q in zip(model.parameters(), device_model.parameters()):
        assert torch.equal(q.grad.cpu(), p.grad)


def test_record_stream_checks_the_device():
    x = torch.arange(8.0, device="tfmbs")
    side = torch.tfmbs.Stream()
    x.record_stream(side)
    with pytest.raises(RuntimeError, match="stream is on tfmbs:1, the tensor on tfmbs:0"):
        x.record_stream(torch.tfmbs.Stream(1))
    with pytest.raises(RuntimeError, match="stream is on cpu"):
        x.record_stream(torch.Stream("cpu"))
    assert torch.equal(x.cpu(), torch.arange(8.0))  # the failed calls changed nothing



def test_queued_work_records_memory_history_without_deadlock(layers):
    first, _ = layers
    x = torch.randn(3, 64)
    xd = x.to("tfmbs")
    s = torch.tfmbs.Stream()
    torch.tfmbs.memory._record_memory_history(context="all", stacks="python")
    try:
        with torch.tfmbs.stream(s):
            torch.tfmbs._sleep(BUSY_MS / 4)
            y = first(xd)  # the worker allocates and frees while the host waits below
            del xd
            # Called from Python with the GIL held (as inductor's kernels call
            # it): it must let the worker's stack capture take the GIL.
            torch.tfmbs._await_streams()
            assert s.query()
        snapshot = torch.tfmbs.memory._snapshot()
    finally:
        torch.tfmbs.memory._record_memory_history(enabled=None)
    assert torch.equal(y.cpu(), first(x))
    assert any(e["action"] == "free_requested" for e in snapshot["device_traces"][0])


SETTLE_SCRIPT = """
import torch, torch_tfmbs
n = 2**19  # 2 MiB of float32: the pool holds two
a = torch.ones(n, device="tfmbs")
big = torch.full((n,), 3.0, device="tfmbs")
back = torch.empty(n).pin_memory()
s = torch.tfmbs.Stream()
with torch.tfmbs.stream(s):
    torch.tfmbs._sleep(300)
    back.copy_(big, non_blocking=True)  # holds big until it has run
del big
c = torch.zeros(n, device="tfmbs")  # no room until the queued copy let big go
print(s.query(), torch.equal(back, torch.full((n,), 3.0)), torch.equal(c.cpu(), torch.zeros(n)),
      torch.equal(a.cpu(), torch.ones(n)))
"""


def test_an_allocation_that_fails_waits_for_queued_work_to_release_memory():
    from conftest import run_python
    r = run_python(SETTLE_SCRIPT, env={"TFMBS_MEMORY": "4MiB", "TFMBS_NUM_FABRICS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True"] * 4


def test_torch_compile_subgraphs_wait_for_queued_work(layers):
    first, _ = layers

    def f(x, flag):
        h = first(x)  # queued on the side stream
        return torch.cond(flag, lambda h: torch.relu(h) * 3 + 1, lambda h: h.abs() - 1, (h,))

    compiled = torch.compile(f)
    x = torch.randn(4, 64)
    xd = x.to("tfmbs")
    s = torch.tfmbs.Stream()
    for flag in (True, False):
        expected = f(x, torch.tensor(flag))
        flag_d = torch.tensor(flag, device="tfmbs")
        compiled(xd, flag_d)  # compile outside the busy region
        with torch.tfmbs.stream(s):
            torch.tfmbs._sleep(BUSY_MS)
            y = compiled(xd, flag_d)
        s.synchronize()
        assert torch.equal(y.cpu(), expected)


def test_freeing_a_storage_waits_for_queued_work_on_any_stream(layers):
    first, _ = layers
    x = torch.randn(3, 64)
    xd = x.to("tfmbs")
    s = torch.tfmbs.Stream()
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        y = first(xd)
    xd.untyped_storage().resize_(0)  # on the default stream, as FSDP frees a parameter's storage
    assert s.query()  # the queued op read x's bytes before they went
    assert torch.equal(y.cpu(), first(x))
    with pytest.raises(RuntimeError, match="data is not allocated"):
        xd.cpu()


def test_queued_ops_see_a_weight_changed_in_place_and_overlap_python_work(layers):
    first, _ = layers
    x = torch.randn(2, 64)
    xd = x.to("tfmbs")
    s = torch.tfmbs.Stream()
    with torch.tfmbs.stream(s):
        first(xd)  # the frame is cached for this version of the weight
    s.synchronize()
    packed = first.dev[0]
    flipped = first.cpu[0].flip(0).contiguous()
    packed.copy_(flipped.to("tfmbs"))  # in place: a new version
    first.cpu = (flipped,) + first.cpu[1:]
    with torch.tfmbs.stream(s):
        torch.tfmbs._sleep(BUSY_MS)
        y = first(xd)
        sum(i * i for i in range(200_000))  # pure Python, holding the GIL, while the stream works
    s.synchronize()
    assert torch.equal(y.cpu(), first(x))
    with torch.inference_mode():
        frozen = Layer(96, 64, 3)
        with torch.tfmbs.stream(s):
            y = frozen(xd)
        s.synchronize()
        assert torch.equal(y.cpu(), frozen(x))
