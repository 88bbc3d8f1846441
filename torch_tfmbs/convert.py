"""Putting a model's linear layers on the fabric.

Two ways:
  * convert(model): module replacement (nn.Linear -> TFMBSLinear), with
    TT-Symbiote's layer lifecycle: from_torch -> preprocess_weights ->
    move_weights_to_device (and move_weights_to_host / deallocate_weights
    for the way back). A layer whose replacement fails keeps its original
    module, with a warning naming it (or an error, if asked).
  * fabric_linear() / set_fabric_linear(True): no replacement at all;
    F.linear calls on tfmbs tensors are routed through tfmbs::ternary_linear.
    Each weight is ternarized and packed on first use, cached (as a resident
    frame on the device), and repacked only when it changes (a new version
    or a new storage).
"""
import contextlib
import copy
import dataclasses
import fnmatch
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from . import quant
from .nn import TFMBSLinear, _needs_grad, _PackedSource, _TernaryLinearSTE

__all__ = ["convert", "ConvertReport", "fabric_linear", "set_fabric_linear", "fabric_linear_enabled"]


@dataclasses.dataclass
class ConvertReport:
    """What convert() did. Sizes are of the replaced layers' weights.

    A module registered under several names (a shared layer) is one entry,
    under its first name in module order; `aliases` maps that name to the
    others."""
    replaced: list = dataclasses.field(default_factory=list)   # qualified names
    failed: list = dataclasses.field(default_factory=list)     # (name, error message)
    excluded: list = dataclasses.field(default_factory=list)   # names left alone on purpose
    aliases: dict = dataclasses.field(default_factory=dict)    # first name -> other names
    fp_bytes: int = 0       # latent weights of the replaced layers, before
    packed_bytes: int = 0   # their packed weights + scales, after
    latent_kept: bool = False

    @property
    def saved_bytes(self):
        """Weight memory freed: all of fp_bytes minus the packed bytes if the
        latent weights were dropped; nothing (a net cost) if they are kept."""
        return self.fp_bytes - self.packed_bytes if not self.latent_kept else -self.packed_bytes

    def __str__(self):
        lines = [f"tfmbs.convert: {len(self.replaced)} layers replaced, {len(self.failed)} failed, "
                 f"{len(self.excluded)} excluded",
                 f"  weights: {self.fp_bytes / 2**20:.2f} MiB fp -> {self.packed_bytes / 2**20:.2f} MiB "
                 f"packed ({self.fp_bytes / max(self.packed_bytes, 1):.1f}x smaller); "
                 f"{'latent weights kept' if self.latent_kept else 'latent weights dropped'}, "
                 f"saved {self.saved_bytes / 2**20:.2f} MiB"]
        lines += [f"  failed: {name}: {err}" for name, err in self.failed]
        return "\n".join(lines)


def _excluded(name, module, exclude):
    for e in exclude:
        if isinstance(e, type):
            if isinstance(module, e):
                return True
        elif name == e or fnmatch.fnmatchcase(name, e):
            return True
    return False


def _set_submodule(model, name, module):
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, module)


def convert(model, mapping=None, exclude=(), inplace=False, *, device=None, keep_latent=False,
            errors="warn", **layer_kwargs):
    """Replaces the modules of `model` whose exact class is a key of `mapping`.

    mapping: {module class: replacement class}, default {nn.Linear: TFMBSLinear}.
      A replacement class provides from_torch(module, **layer_kwargs) and the
      lifecycle methods preprocess_weights(), move_weights_to_device(device),
      move_weights_to_host(), deallocate_weights().
    exclude: qualified module names, fnmatch patterns ("encoder.*.output.dense")
      or module classes to leave alone.
    inplace: False converts a deep copy and leaves `model` untouched.
    device: where the replacements' weights go; default: where the original's were.
    keep_latent: keep the fp latent weights (needed to train); False frees them
      after packing, which is where the memory saving comes from. A
      TFMBSLinear without its latent weight refuses a training-mode forward
      that needs gradients (it could only train the bias): convert with
      keep_latent=True to train, or run eval() / torch.no_grad() to infer.
    errors: "warn" keeps a layer whose replacement fails (warning naming it);
      "raise" raises instead.
    layer_kwargs: passed to from_torch (act_mode, packing, method, per_channel...).

    A module registered in several places (model.a = model.b = lin) gets one
    replacement, set in every place, so they stay one module; the report
    lists it once, under its first name (ConvertReport.aliases has the
    others). It is excluded if any of its names is.

    Returns (model, ConvertReport).
    """
    if errors not in ("warn", "raise"):
        raise ValueError(f"convert: errors={errors!r} must be 'warn' or 'raise'")
    mapping = {nn.Linear: TFMBSLinear} if mapping is None else dict(mapping)
    exclude = (exclude,) if isinstance(exclude, (str, type)) else tuple(exclude)
    if not inplace:
        model = copy.deepcopy(model)
    report = ConvertReport(latent_kept=keep_latent)
    # Every name of every target, in module order: a shared module is
    # replaced once and the replacement set under all its names, or the
    # names left with the original would split it in two.
    targets = {}  # id -> (module, [names])
    for n, m in model.named_modules(remove_duplicate=False):
        if n and type(m) in mapping:
            targets.setdefault(id(m), (m, []))[1].append(n)
    for child, names in targets.values():
        name = names[0]
        if len(names) > 1:
            report.aliases[name] = names[1:]
        replacement = mapping[type(child)]
        if any(_excluded(n, child, exclude) for n in names):
            report.excluded.append(name)
            continue
        new = None
        try:
            target = device
            if target is None:
                p = next(child.parameters(), None)
                target = p.device if p is not None else torch.device("cpu")
            fp_bytes = sum(p.numel() * p.element_size() for n, p in child.named_parameters()
                           if n == "weight")
            new = replacement.from_torch(child, **layer_kwargs)
            new.preprocess_weights()
            new.move_weights_to_device(target)
            if not keep_latent and hasattr(new, "drop_latent"):
                new.drop_latent()
            for n in names:
                _set_submodule(model, n, new)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the original
            for n in names:
                with contextlib.suppress(Exception):
                    _set_submodule(model, n, child)
            if new is not None:
                with contextlib.suppress(Exception):
                    new.deallocate_weights()
            msg = f"{type(exc).__name__}: {exc}"
            if errors == "raise":
                raise RuntimeError(f"tfmbs.convert: replacing layer '{name}' "
                                   f"({type(child).__name__}) failed: {msg}") from exc
            warnings.warn(f"tfmbs.convert: layer '{name}' ({type(child).__name__}) keeps its "
                          f"original module: {msg}", stacklevel=2)
            report.failed.append((name, msg))
            continue
        report.replaced.append(name)
        report.fp_bytes += fp_bytes
        report.packed_bytes += new.packed_bytes() if hasattr(new, "packed_bytes") else 0
    return model, report


# ------------------------------------------------------------ fabric_linear

class _FabricLinearMode(TorchFunctionMode):
    """Routes F.linear on tfmbs tensors through tfmbs::ternary_linear."""

    def __init__(self, act_mode="int8", packing="pt5", method="absmean", per_channel=False):
        super().__init__()
        self.act_mode = quant.check_act_mode(act_mode, "fabric_linear")
        self.packing = quant.check_packing(packing, "fabric_linear")
        self.method = quant.check_method(method, "fabric_linear")
        self.per_channel = per_channel

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x = args[0] if args else kwargs.get("input")
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            if (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and x.device.type == "tfmbs"
                    and w.device == x.device and w.dim() == 2 and x.dim() >= 1
                    and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
                    and not isinstance(x, FakeTensor)):
                return _linear_on_fabric(x, w, b, self)
        return func(*args, **kwargs)


# weight -> (_PackedSource, config key, packed, scale); dies with the weight.
_WEIGHT_CACHE = WeakIdKeyDictionary()


def _packed_for(w, cfg):
    ckey = (cfg.packing, cfg.method, cfg.per_channel)
    hit = _WEIGHT_CACHE.get(w)
    if hit is not None and hit[0].matches(w) and hit[1] == ckey:
        return hit[2], hit[3]
    with torch.inference_mode(False), torch.no_grad():  # usable for training later
        trits, scale = quant.ternarize(w, cfg.method, cfg.per_channel)
        packed = quant.pack(trits, cfg.packing)
        out, inp = w.shape
        torch.ops.tfmbs.prepare_frame(packed, out, inp, cfg.packing)
    _WEIGHT_CACHE[w] = (_PackedSource(w), ckey, packed, scale)
    return packed, scale


def _linear_on_fabric(x, w, b, cfg):
    out, inp = w.shape
    packed, scale = _packed_for(w, cfg)
    if _needs_grad(x, w, b):
        return _TernaryLinearSTE.apply(x, w, b, packed, scale, out, inp, cfg.packing, cfg.act_mode)
    return torch.ops.tfmbs.ternary_linear(x, packed, scale, b.detach() if b is not None else None,
                                          out, inp, cfg.packing, cfg.act_mode)


@contextlib.contextmanager
def fabric_linear(act_mode="int8", packing="pt5", method="absmean", per_channel=False):
    """Within the block, F.linear (hence nn.Linear) on tfmbs tensors runs on
    the fabric with ternarized weights; other devices are untouched."""
    with _FabricLinearMode(act_mode, packing, method, per_channel):
        yield


_GLOBAL_MODE = None


def set_fabric_linear(enabled, **config):
    """The global switch: fabric_linear(**config) for everything that follows
    (on the calling thread: torch function modes are thread-local), until
    set_fabric_linear(False). Returns the previous state."""
    global _GLOBAL_MODE
    previous = _GLOBAL_MODE is not None
    if _GLOBAL_MODE is not None:
        _GLOBAL_MODE.__exit__(None, None, None)
        _GLOBAL_MODE = None
    if enabled:
        mode = _FabricLinearMode(**config)
        mode.__enter__()
        _GLOBAL_MODE = mode
    return previous


def fabric_linear_enabled():
    return _GLOBAL_MODE is not None


def clear_fabric_linear_cache():
    """Forgets every packed weight fabric_linear made (their frames are freed
    with them)."""
    _WEIGHT_CACHE.clear()
