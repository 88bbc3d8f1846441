"""Putting a model's linear layers on the fabric.

Two ways:
  * convert(model): module replacement (nn.Linear -> TFMBSLinear), with
    TT-Symbiote's layer lifecycle: from_torch -> preprocess_weights ->
    move_weights_to_device (and move_weights_to_host / deallocate_weights
    for the way back). A layer whose replacement fails keeps its original
    module, with a warning naming it (or an error, if asked).
  * fabric_linear() / set_fabric_linear(True): no replacement at all;
    F.linear calls on tfmbs tensors are routed through tfmbs::ternary_linear,
    and so is torch.addmm(bias, x, w) with a 2-D weight w [in, out] (the
    dense linear of transformers' Conv1D, GPT-2's layers). Each weight is
    ternarized and packed on first use, cached (as a resident frame on the
    device), and repacked only when it changes (a new version or a new
    storage).

transformers' Conv1D (weight [in, out], the transpose of nn.Linear's) is
in convert()'s default mapping when transformers is loaded: it becomes a
TFMBSLinear holding the transposed weight.
"""
import contextlib
import copy
import dataclasses
import fnmatch
import sys
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


def _default_mapping():
    mapping = {nn.Linear: TFMBSLinear}
    # A model holding a Conv1D has loaded transformers.pytorch_utils; looking
    # it up in sys.modules keeps `import torch_tfmbs` from importing
    # transformers (slow, and optional).
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    if conv1d is not None:
        mapping[conv1d] = TFMBSLinear  # TFMBSLinear.from_torch transposes its weight
    return mapping


def convert(model, mapping=None, exclude=(), inplace=False, *, device=None, keep_latent=False,
            errors="warn", **layer_kwargs):
    """Replaces the modules of `model` whose exact class is a key of `mapping`.

    mapping: {module class: replacement class}, default {nn.Linear: TFMBSLinear},
      plus {transformers' Conv1D: TFMBSLinear} when transformers is loaded.
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
    mapping = _default_mapping() if mapping is None else dict(mapping)
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

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def _on_fabric(*tensors):
    """All of `tensors` are real (not Fake) tfmbs tensors on one device."""
    return (all(isinstance(t, torch.Tensor) and not isinstance(t, FakeTensor) for t in tensors)
            and tensors[0].device.type == "tfmbs" and all(t.device == tensors[0].device for t in tensors))


class _FabricLinearMode(TorchFunctionMode):
    """Routes F.linear, and torch.addmm(bias, x, w) with a 2-D weight (a
    dense linear written as x @ w + bias, as transformers' Conv1D does), on
    tfmbs tensors through tfmbs::ternary_linear."""

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
            if (_on_fabric(x, w) and w.dim() == 2 and x.dim() >= 1 and x.dtype in _FLOATS):
                return _linear_on_fabric(x, w, b, self)
        elif func is torch.addmm or func is torch.Tensor.addmm:
            routed = _addmm_as_linear(args, kwargs)
            if routed is not None:
                return _linear_on_fabric(*routed, self, transposed=True)
        return func(*args, **kwargs)


def _addmm_as_linear(args, kwargs):
    """(x, w, bias) if addmm(bias, x, w) is F.linear(x, w.t(), bias) on the
    fabric, else None (left to torch, which also raises for bad operands).
    Only beta = alpha = 1 and a bias per output column: that is all the
    op's epilogue adds."""
    names = ("input", "mat1", "mat2")
    if len(args) > 3 or "out" in kwargs or any(k not in names + ("beta", "alpha") for k in kwargs):
        return None
    bias, x, w = (args[i] if i < len(args) else kwargs.get(n) for i, n in enumerate(names))
    if kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1:
        return None
    if not (_on_fabric(x, w, bias) and x.dim() == 2 and w.dim() == 2 and x.dtype in _FLOATS
            and w.dtype == x.dtype and bias.dtype == x.dtype and x.shape[1] == w.shape[0]):
        return None
    out = w.shape[1]
    if bias.shape not in ((out,), (1, out)):
        return None
    return x, w, bias.reshape(out)


# weight -> {config key: (_PackedSource, packed, scale)}; dies with the
# weight. One entry per config, so a weight used both as F.linear's and as
# addmm's (transposed) keeps both packings instead of repacking each call.
_WEIGHT_CACHE = WeakIdKeyDictionary()


def _packed_for(w, cfg, transposed=False):
    """The packed ternary form of w ([out, in]), or of w.t() if transposed
    (w is then [in, out], addmm's layout)."""
    ckey = (cfg.packing, cfg.method, cfg.per_channel, transposed)
    entries = _WEIGHT_CACHE.get(w)
    hit = entries.get(ckey) if entries is not None else None
    # The source is w itself, transposed or not: it sees w's in-place writes.
    if hit is not None and hit[0].matches(w):
        return hit[1], hit[2]
    with torch.inference_mode(False), torch.no_grad():  # usable for training later
        # Contiguous, so the ternarization (its absmean's summation order)
        # is the one TFMBSLinear.from_torch's transposed copy gets.
        src = w.t().contiguous() if transposed else w
        trits, scale = quant.ternarize(src, cfg.method, cfg.per_channel)
        packed = quant.pack(trits, cfg.packing)
        out, inp = src.shape
        torch.ops.tfmbs.prepare_frame(packed, out, inp, cfg.packing)
    # Entries of w's old values go: they would hold its old storage alive.
    entries = {k: e for k, e in (entries or {}).items() if e[0].matches(w)}
    entries[ckey] = (_PackedSource(w), packed, scale)
    _WEIGHT_CACHE[w] = entries
    return packed, scale


def _linear_on_fabric(x, w, b, cfg, transposed=False):
    """F.linear(x, w, b), or F.linear(x, w.t(), b) if transposed, on the fabric."""
    packed, scale = _packed_for(w, cfg, transposed)
    if transposed:
        w = w.t()  # a view: the STE's weight gradient reaches w through it
    out, inp = w.shape
    if _needs_grad(x, w, b):
        return _TernaryLinearSTE.apply(x, w, b, packed, scale, out, inp, cfg.packing, cfg.act_mode)
    return torch.ops.tfmbs.ternary_linear(x, packed, scale, b.detach() if b is not None else None,
                                          out, inp, cfg.packing, cfg.act_mode)


@contextlib.contextmanager
def fabric_linear(act_mode="int8", packing="pt5", method="absmean", per_channel=False):
    """Within the block, F.linear (hence nn.Linear) and torch.addmm(bias, x, w)
    with beta = alpha = 1 (hence transformers' Conv1D) on tfmbs tensors run
    on the fabric with ternarized weights; other devices are untouched."""
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
