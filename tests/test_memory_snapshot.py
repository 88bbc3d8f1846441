"""torch.tfmbs.memory._record_memory_history / _snapshot: the pools'
segments, blocks and allocation events in torch.cuda.memory._snapshot()'s
format, read back by torch's own viewers (torch.cuda._memory_viz)."""
import base64
import inspect
import json
import pickle
import re

import pytest
import torch
from torch.cuda import _memory_viz


@pytest.fixture
def history():
    torch.tfmbs.memory._record_memory_history("all")
    yield
    torch.tfmbs.memory._record_memory_history(None)


def block_of(snapshot, address):
    for segment in snapshot["segments"]:
        for block in segment["blocks"]:
            if block["address"] == address:
                return segment, block
    return None, None


def test_a_tensor_is_an_allocated_block_of_its_segment():
    x = torch.empty(1000, device="tfmbs")  # 4000 bytes: a 4032-byte block
    segment, block = block_of(torch.tfmbs.memory._snapshot(), x.data_ptr())
    assert block == {"address": x.data_ptr(), "size": 4032, "requested_size": 4000,
                     "state": "active_allocated", "frames": []}
    assert segment["device"] == 0 and segment["segment_type"] == "small"
    assert segment["address"] <= x.data_ptr() < segment["address"] + segment["total_size"]
    assert sum(b["size"] for b in segment["blocks"]) == segment["total_size"]
    # The snapshot agrees with the allocator's statistics.
    snapshot = torch.tfmbs.memory._snapshot()
    on_device0 = [s for s in snapshot["segments"] if s["device"] == 0]
    assert sum(s["total_size"] for s in on_device0) == torch.tfmbs.memory_reserved(0)
    assert sum(s["allocated_size"] for s in on_device0) == torch.tfmbs.memory_allocated(0)
    address = x.data_ptr()
    del x
    _, block = block_of(torch.tfmbs.memory._snapshot(), address)
    assert block is None or block["state"] == "inactive"


def test_history_records_allocations_and_frees_in_order(history):
    x = torch.empty(1000, device="tfmbs:1")
    address = x.data_ptr()
    del x
    trace = torch.tfmbs.memory._snapshot()["device_traces"][1]
    ours = [(e["action"], e["size"]) for e in trace if e["addr"] == address]
    assert ours[-3:] == [("alloc", 4032), ("free_requested", 4032), ("free_completed", 4032)]
    times = [e["time_us"] for e in trace]
    assert times == sorted(times)
    torch.tfmbs.memory._record_memory_history(None)
    assert torch.tfmbs.memory._snapshot()["device_traces"] == [[], []]


def allocate_here():
    """A tensor on tfmbs:1 and the line that allocated it."""
    line = inspect.currentframe().f_lineno + 1
    return torch.empty(1000, device="tfmbs:1"), line


def free_here(box):
    line = inspect.currentframe().f_lineno + 1
    box.clear()
    return line


def frame_at(frames, name):
    return next((f for f in frames if f["name"] == name and f["filename"] == __file__), None)


@pytest.mark.parametrize("context", ["all", "alloc", "state", None])
def test_events_carry_the_python_stack_that_caused_them(context):
    torch.tfmbs.memory._record_memory_history("all", context=context)
    try:
        x, alloc_line = allocate_here()
        address = x.data_ptr()
        block = block_of(torch.tfmbs.memory._snapshot(), address)[1]
        box = [x]
        del x
        free_line = free_here(box)  # the last reference goes there
        trace = torch.tfmbs.memory._snapshot()["device_traces"][1]
    finally:
        torch.tfmbs.memory._record_memory_history(None)
    alloc = [e for e in trace if e["addr"] == address and e["action"] == "alloc"][-1]
    free = [e for e in trace if e["addr"] == address and e["action"] == "free_completed"][-1]
    if context is None:
        assert alloc["frames"] == free["frames"] == block["frames"] == []
        return
    # The allocating line, in CUDA's frame format; the live block shows it too.
    assert frame_at(alloc["frames"], "allocate_here") == {"filename": __file__, "line": alloc_line,
                                                          "name": "allocate_here"}
    assert frame_at(alloc["frames"], "test_events_carry_the_python_stack_that_caused_them")
    assert block["frames"] == alloc["frames"]
    if context == "all":
        assert frame_at(free["frames"], "free_here")["line"] == free_line
    else:
        assert free["frames"] == []


def test_bad_history_arguments_raise():
    with pytest.raises(ValueError, match="context"):
        torch.tfmbs.memory._record_memory_history("all", context="stack")
    with pytest.raises(ValueError, match="stacks"):
        torch.tfmbs.memory._record_memory_history("all", stacks="cpp")
    assert torch.tfmbs.memory._snapshot()["device_traces"] == [[], []]


def test_an_out_of_memory_failure_is_in_the_trace(history):
    too_big = torch.tfmbs.get_device_properties(0).total_memory + 2**20
    with pytest.raises(torch.OutOfMemoryError):
        torch.empty(too_big, dtype=torch.uint8, device="tfmbs")
    oom = [e for e in torch.tfmbs.memory._snapshot()["device_traces"][0] if e["action"] == "oom"]
    assert oom[-1]["size"] == too_big and oom[-1]["device_free"] > 0


def test_torchs_viewers_read_it(history, tmp_path):
    x = torch.ones(4096, device="tfmbs")
    y = x * 2
    del x
    snapshot = torch.tfmbs.memory._snapshot()
    text = _memory_viz.trace(snapshot)
    assert "Device 0" in text and re.search(r"\w+ = seg_\d+\[\d+:16\.0KiB\]", text)
    assert f"segments: {len(snapshot['segments'])}" in _memory_viz.segsum(snapshot)
    for html in (_memory_viz.trace_plot(snapshot), _memory_viz.segment_plot(snapshot)):
        embedded = json.loads(re.search(r"const local_files = (.*)\n", html).group(1))[0]["base64"]
        assert pickle.loads(base64.b64decode(embedded).rstrip(b"\x00")) == snapshot
    path = tmp_path / "snapshot.pickle"
    torch.tfmbs.memory._dump_snapshot(str(path))
    assert pickle.loads(path.read_bytes())["segments"] == torch.tfmbs.memory._snapshot()["segments"]
    del y


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="enabled must be None, 'state' or 'all'"):
        torch.tfmbs.memory._record_memory_history("yes")
    with pytest.raises(ValueError, match="max_entries must be >= 1"):
        torch.tfmbs.memory._record_memory_history("all", max_entries=0)
