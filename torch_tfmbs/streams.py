"""torch.tfmbs.Stream, Event, stream, current_stream, synchronize: the
names torch.cuda has, over torch's generic Stream and Event, which reach the
device guard (csrc/device/TfmbsGuard.cpp).

Streams are real (csrc/device/StreamWork.h): each runs its work in order.
On a side stream, fabric ops (the ternary linear) go on the stream's worker
and return at once, so work on two streams overlaps; non_blocking copies
between pinned host memory and the device are queued on any stream. Every
other op runs when called, after its stream's queued work. Events and
wait_stream order streams, synchronize waits, as on CUDA: reading a side
stream's result elsewhere without them is a race, as it is there.
"""
import atexit
import contextlib

import torch

from . import _C
from ._device_index import index as _index


def _device(device):
    return torch.device("tfmbs", _index(device))


# Factories, named as torch.cuda's classes: torch's own types, since some of
# their methods (Event.elapsed_time) refuse a subclass.
def Stream(device=None, priority=0):  # noqa: N802
    """A new torch.Stream on a tfmbs device (default: the current one)."""
    return torch.Stream(device=_device(device), priority=priority)


def Event(enable_timing=False, blocking=False, interprocess=False):  # noqa: N802
    """A torch.Event on the current tfmbs device."""
    return torch.Event(device=_device(None), enable_timing=enable_timing, blocking=blocking,
                       interprocess=interprocess)


def current_stream(device=None):
    return torch.accelerator.current_stream(_device(device))


def default_stream(device=None):
    """The device's default stream (id 0), as torch.cuda.default_stream."""
    current = current_stream(device)
    return torch.Stream(stream_id=0, device_index=current.device_index, device_type=current.device_type)


def set_stream(s):
    """Makes `s` current on its device, as torch.cuda.set_stream (None: no-op)."""
    if s is not None:
        torch.accelerator.set_stream(s)


def stream(s):
    """`with stream(s)`, as torch.cuda.stream (None: a no-op)."""
    return contextlib.nullcontext() if s is None else s


def synchronize(device=None):
    """Waits for the work queued on every stream of the device (and raises
    the first failure of that work not yet raised)."""
    _C.synchronize(_index(device))


def _sleep(milliseconds, device=None):
    """Keeps the current stream busy for `milliseconds` (for tests, as
    torch.cuda._sleep keeps the GPU busy)."""
    _C.stream_sleep(_index(device), float(milliseconds))


def _await_streams():
    """Waits for the work queued on the calling thread's current streams;
    code that reads device memory directly (inductor's kernels, Gloo's views)
    calls it first."""
    _C.await_streams()


@atexit.register
def _finish_queued_work():
    # Queued work must not run on while the interpreter is torn down; a
    # failure nobody waited for is reported as CUDA's would be: not at all.
    for index in range(_C.device_count()):
        with contextlib.suppress(RuntimeError):
            synchronize(index)
