"""The device index every tfmbs API takes a `device` argument through.

A leaf of the package (it imports only torch and the extension), so the
device, memory, random and fabric modules can all import it at the top.
"""
import torch

from . import _C


def index(device=None):
    """The index of `device`: None is the current device; an int, a string
    ("tfmbs", "tfmbs:1") or a torch.device. An index the process has no
    device for raises IndexError (from _C.check_device); another device
    type raises ValueError."""
    if device is None:
        return _C.current_device()
    if isinstance(device, (str, torch.device)):
        device = torch.device(device)
        if device.type != "tfmbs":
            raise ValueError(f"expected a tfmbs device, got {device}")
        return _C.current_device() if device.index is None else _C.check_device(device.index)
    return _C.check_device(int(device))

