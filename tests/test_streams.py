"""torch.tfmbs.Stream / Event / current_stream / stream (torch_tfmbs/streams.py):
torch's generic streams and events on tfmbs, which are always idle because
the fabric completes an op before it returns."""
import time

import pytest
import torch


def test_stream_defaults_to_the_current_device():
    s = torch.tfmbs.Stream()
    assert type(s) is torch.Stream and s.device == torch.device("tfmbs:0")
    with torch.tfmbs.device(1):
        assert torch.tfmbs.Stream().device == torch.device("tfmbs:1")
    assert torch.tfmbs.Stream("tfmbs:1", priority=-1).device == torch.device("tfmbs:1")
    with pytest.raises(ValueError, match="expected a tfmbs device"):
        torch.tfmbs.Stream("cpu")


def test_streams_and_events_are_always_complete():
    s = torch.tfmbs.Stream()
    x = torch.ones(1000, device="tfmbs")
    with torch.tfmbs.stream(s):
        y = x * 2
        event = torch.tfmbs.Event()
        event.record()
    assert type(event) is torch.Event and event.device == torch.device("tfmbs:0")
    assert s.query() and event.query()
    torch.tfmbs.current_stream().wait_event(event)
    torch.tfmbs.current_stream().wait_stream(s)
    s.synchronize()
    event.synchronize()
    assert y.sum().item() == 2000.0
    with torch.tfmbs.stream(None):  # as torch.cuda.stream(None): no change
        assert torch.tfmbs.current_stream().device == torch.device("tfmbs:0")


def test_current_stream_is_the_devices():
    assert torch.tfmbs.current_stream() == torch.accelerator.current_stream()
    assert torch.tfmbs.current_stream(1).device == torch.device("tfmbs:1")


def test_timing_events_measure_host_time():
    start, end = torch.tfmbs.Event(enable_timing=True), torch.tfmbs.Event(enable_timing=True)
    start.record()
    time.sleep(0.02)
    end.record()
    assert start.elapsed_time(end) >= 20.0


def test_record_stream_checks_the_device_and_keeps_the_memory_usable():
    x = torch.arange(8.0, device="tfmbs")
    side = torch.tfmbs.Stream()
    with torch.tfmbs.stream(side):
        y = x * 3
    y.record_stream(side)  # work on `side` is complete: nothing to hold back
    assert torch.equal(y.cpu(), torch.arange(8.0) * 3)
    with pytest.raises(RuntimeError, match="stream is on tfmbs:1, the tensor on tfmbs:0"):
        y.record_stream(torch.tfmbs.Stream(1))
    with pytest.raises(RuntimeError, match="stream is on cpu"):
        y.record_stream(torch.Stream("cpu"))
    assert torch.equal(y.cpu(), torch.arange(8.0) * 3)  # the failed calls changed nothing
