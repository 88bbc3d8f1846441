"""torch.tfmbs.Stream, Event, current_stream, stream: the names torch.cuda
has, which device-generic code (FSDP2) calls on a device module.

The emulated fabric completes an op before it returns (csrc/device/
TfmbsGuard.cpp), so every stream is always idle: query() is True and
synchronize/wait return at once; events record a host timestamp, so
elapsed_time measures. torch's generic Stream/Event reach that guard; these
give them tfmbs as the default device, as torch.cuda's names do.
"""
import contextlib

import torch

from ._device_index import index as _index


def _device(device):
    return torch.device("tfmbs", _index(device))


# Factories, named as torch.cuda's classes: torch's own types, since some of
# their methods (Event.elapsed_time) refuse a subclass.
def Stream(device=None, priority=0):  # noqa: N802
    """A torch.Stream on a tfmbs device (default: the current one)."""
    return torch.Stream(device=_device(device), priority=priority)


def Event(enable_timing=False, blocking=False, interprocess=False):  # noqa: N802
    """A torch.Event on the current tfmbs device."""
    return torch.Event(device=_device(None), enable_timing=enable_timing, blocking=blocking,
                       interprocess=interprocess)


def current_stream(device=None):
    return torch.accelerator.current_stream(_device(device))


def stream(s):
    """`with stream(s)`, as torch.cuda.stream (None: a no-op). Every stream
    being idle, which one is current changes nothing."""
    return contextlib.nullcontext() if s is None else s
