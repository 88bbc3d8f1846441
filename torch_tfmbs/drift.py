"""How far a converted model's outputs moved from the fp model's, on one
calibration batch: per layer and for the model's output, the cosine
similarity and the relative error ||a - b|| / ||a|| (a: fp, b: converted).

record() runs the fp model and keeps a CPU copy of each watched layer's
outputs (a copy: the model may write into them in place afterwards) and of
its output; compare() runs the converted model and consumes those copies
as the same layers fire, so the two models' layer outputs are never held
at once. A layer's drift includes that of the layers before it: both
models see the same model input, not the same layer input.
"""
import contextlib
import dataclasses
import math
from collections.abc import Mapping

import torch

__all__ = ["check_calibration", "record", "compare"]


def check_calibration(calibration):
    """Raises TypeError unless `calibration` is a tensor (model(x)), a tuple
    (model(*args)) or a mapping (model(**kwargs))."""
    if not isinstance(calibration, (torch.Tensor, tuple, Mapping)):
        raise TypeError(f"convert: calibration must be a tensor (model(x)), a tuple of positional "
                        f"arguments (model(*args)) or a dict of keyword arguments (model(**kwargs)), "
                        f"got {type(calibration).__name__}")


def _describe_value(v):
    if isinstance(v, torch.Tensor):
        return f"tensor {list(v.shape)} {v.dtype} on {v.device}"
    return type(v).__name__


def _describe(calibration):
    if isinstance(calibration, torch.Tensor):
        return _describe_value(calibration)
    if isinstance(calibration, tuple):
        return f"args ({', '.join(_describe_value(v) for v in calibration)})"
    return "kwargs {" + ", ".join(f"{k}: {_describe_value(v)}" for k, v in calibration.items()) + "}"


def _first_tensor(out, what):
    """The tensor to compare in a module's or model's output: the output
    itself if a tensor; else the first tensor with at least one dimension
    among its values (a ModelOutput's logits or last_hidden_state, not a
    0-dim loss that comes before them)."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return v
    raise TypeError(f"convert: calibration: {what}'s output ({type(out).__name__}) has no tensor "
                    f"to compare")


def _host_copy(t):
    return t.detach().to("cpu", copy=True)


@contextlib.contextmanager
def _hooked(model, hooks):
    """Eval mode, no autograd, and {module: forward hook} registered; every
    module's training flag and no hook are left behind."""
    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(h) for m, h in hooks.items()]
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training


def _run(model, calibration, which):
    if isinstance(calibration, torch.Tensor):
        args, kwargs = (calibration,), {}
    elif isinstance(calibration, tuple):
        args, kwargs = calibration, {}
    else:
        args, kwargs = (), dict(calibration)
    try:
        out = model(*args, **kwargs)
    except Exception as exc:
        raise RuntimeError(f"convert: the {which} model failed on the calibration input "
                           f"({_describe(calibration)}): {type(exc).__name__}: {exc}") from exc
    return _first_tensor(out, f"the {which} model")


@dataclasses.dataclass
class Recording:
    layers: dict   # name -> [host copies of the layer's outputs, in call order]
    output: torch.Tensor


def record(model, calibration, modules):
    """Runs the fp `model` on `calibration`, keeping the outputs of
    `modules` ({name: module}) and the model's output."""
    layers = {name: [] for name in modules}

    def keep(name):
        return lambda module, args, out: layers[name].append(_host_copy(_first_tensor(out, name)))

    with _hooked(model, {m: keep(n) for n, m in modules.items()}):
        output = _host_copy(_run(model, calibration, "fp"))
    return Recording(layers, output)


class _Sums:
    """sum(a*b), sum(a*a), sum(b*b), sum((a-b)^2) in float64, over calls."""

    def __init__(self):
        self.ab = self.aa = self.bb = self.dd = 0.0

    def add(self, a, b, name):
        if a.shape != b.shape:
            raise RuntimeError(f"convert: calibration: {name} gave shape {list(b.shape)} after "
                               f"conversion, {list(a.shape)} before")
        a, b = a.to(torch.float64), b.detach().to("cpu", torch.float64)
        self.ab += float((a * b).sum())
        self.aa += float((a * a).sum())
        self.bb += float((b * b).sum())
        self.dd += float(((a - b) ** 2).sum())

    def drift(self):
        """(cosine, relative error); a zero fp output gives (1, 0) if the
        converted one is zero too, else (0, inf)."""
        if self.aa == 0.0:
            return (1.0, 0.0) if self.bb == 0.0 else (0.0, math.inf)
        cosine = self.ab / math.sqrt(self.aa * self.bb) if self.bb > 0.0 else 0.0
        return cosine, math.sqrt(self.dd / self.aa)


def compare(model, calibration, recording, names):
    """Runs the converted `model` on `calibration` and returns
    ({name: (cosine, rel_error)} for each of `names`, (cosine, rel_error)
    of the model's output), against `recording` of the fp model."""
    sums = {name: _Sums() for name in names}
    pending = {name: list(reversed(recording.layers[name])) for name in names}

    def check(name):
        def hook(module, args, out):
            if not pending[name]:
                raise RuntimeError(f"convert: calibration: layer '{name}' ran more times after "
                                   f"conversion than the {len(recording.layers[name])} before")
            sums[name].add(pending[name].pop(), _first_tensor(out, name), f"layer '{name}'")
        return hook

    with _hooked(model, {model.get_submodule(n): check(n) for n in names}):
        output = _run(model, calibration, "converted")
    for name, left in pending.items():
        if left:
            raise RuntimeError(f"convert: calibration: layer '{name}' ran {len(left)} fewer times "
                               f"after conversion than the {len(recording.layers[name])} before")
    total = _Sums()
    total.add(recording.output, output, "the model")
    return {name: s.drift() for name, s in sums.items()}, total.drift()
