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
import itertools
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from . import drift, quant
from .nn import TFMBSLinear, _needs_grad, _PackedSource, _TernaryLinearSTE
from .ternary import frame_cache_info

__all__ = ["convert", "ConvertReport", "fabric_linear", "set_fabric_linear", "fabric_linear_enabled"]


@dataclasses.dataclass
class ConvertReport:
    """What convert() did.

    A module registered under several names (a shared layer) is one entry,
    under its first name in module order; `aliases` maps that name to the
    others.

    Bytes are summed over devices. fp_bytes and packed_bytes compare the
    replaced layers' weights before and after; what the model's memory
    gained is saved_bytes: the fp weight memory the model no longer holds
    (freed_bytes: a weight still held elsewhere in the model, tied to an
    embedding or kept as the latent weight, is not freed) minus the packed
    weights and scales and, on tfmbs, the resident frames pinned in the
    fabric pool for them.

    With a calibration batch, drift maps each replaced layer to (cosine,
    relative error) of its outputs against the fp model's, and model_drift
    is that of the model's output (see torch_tfmbs.drift)."""
    replaced: list = dataclasses.field(default_factory=list)   # qualified names
    failed: list = dataclasses.field(default_factory=list)     # (name, error message)
    excluded: list = dataclasses.field(default_factory=list)   # names left alone on purpose
    aliases: dict = dataclasses.field(default_factory=dict)    # first name -> other names
    tied: dict = dataclasses.field(default_factory=dict)       # name -> names of the fp tensors holding its weight
    fp_bytes: int = 0       # fp weights of the replaced layers, each storage once
    packed_bytes: int = 0   # their packed weights + scales
    freed_bytes: int = 0    # fp weight memory the model no longer holds
    frame_bytes: int = 0    # resident frames pinned in tfmbs pools for the packed weights
    latent_kept: bool = False
    drift: dict = dataclasses.field(default_factory=dict)      # name -> (cosine, rel_error)
    model_drift: tuple = None                                  # (cosine, rel_error) of the output

    @property
    def saved_bytes(self):
        """The drop in the memory the model holds (negative: it grew)."""
        return self.freed_bytes - self.packed_bytes - self.frame_bytes

    def __str__(self):
        mib = 2 ** 20
        kept_tied = [n for n in self.tied if n not in self.replaced]
        lines = [f"tfmbs.convert: {len(self.replaced)} layers replaced, {len(self.failed)} failed, "
                 f"{len(self.excluded)} excluded, {len(kept_tied)} kept fp (weight tied)",
                 f"  weights: {self.fp_bytes / mib:.2f} MiB fp -> {self.packed_bytes / mib:.2f} MiB "
                 f"packed ({self.fp_bytes / max(self.packed_bytes, 1):.1f}x smaller) + "
                 f"{self.frame_bytes / mib:.2f} MiB resident frames; "
                 f"{'latent weights kept' if self.latent_kept else 'latent weights dropped'}, "
                 f"{self.freed_bytes / mib:.2f} MiB fp freed, saved {self.saved_bytes / mib:.2f} MiB"]
        for name, holders in self.tied.items():
            state = ("converted, its fp weight still held" if name in self.replaced
                     else "kept fp (convert_tied=True converts it)")
            lines.append(f"  tied: {name}: weight shared with {', '.join(holders)}; {state}")
        lines += [f"  failed: {name}: {err}" for name, err in self.failed]
        if self.model_drift is not None:
            lines.append("  drift from fp on the calibration batch (cosine, relative error):")
            rows = [("model output", self.model_drift)] + list(self.drift.items())
            lines += [f"    {name}: {c:.4f}, {r:.4f}" for name, (c, r) in rows]
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


def _storage_key(t):
    return t.device, t.untyped_storage().data_ptr()


def _held_bytes(model):
    """Bytes of the storages the model's parameters and buffers hold, each once."""
    held = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        held[_storage_key(t)] = t.untyped_storage().nbytes()
    return sum(held.values())


def _fp_holders(model, converting):
    """{storage key: [qualified names]} of the parameters and buffers of the
    modules that stay fp (all but the ids in `converting`)."""
    holders = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        if id(m) in converting:
            continue
        for tname, t in itertools.chain(m.named_parameters(recurse=False),
                                        m.named_buffers(recurse=False)):
            names = holders.setdefault(_storage_key(t), [])
            qualified = f"{mname}.{tname}" if mname else tname
            if qualified not in names:
                names.append(qualified)
    return holders


def convert(model, mapping=None, exclude=(), inplace=False, *, device=None, keep_latent=False,
            errors="warn", convert_tied=False, calibration=None, min_cosine=0.9, **layer_kwargs):
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
    convert_tied: also convert a layer whose weight is tied to a parameter or
      buffer that stays fp, as GPT-2's lm_head is to the token embedding.
      Off by default: the fp weight stays held for the embedding, so
      converting frees nothing and adds the packed weight, and a ternary
      output head adds to the drift (BitNet b1.58 ternarizes only the
      attention and feed-forward linears). Such layers are listed in
      ConvertReport.tied either way.
    calibration: a batch to measure the drift on: a tensor (model(x)), a
      tuple (model(*args)) or a dict (model(**kwargs)), as the model takes
      it (same device). The model runs on it in eval mode under no_grad
      before and after conversion (training flags are restored); the report
      gets each replaced layer's and the output's cosine similarity and
      relative error to fp (ConvertReport.drift, model_drift). For a
      ModelOutput or tuple, the output compared is its first tensor with
      a dimension (logits, last_hidden_state).
    min_cosine: with a calibration batch, convert() warns when the output's
      cosine to fp is below this (default 0.9; the pretrained MiniLM
      ternarized without training gives 0.55, weights already ternary
      above 0.999).
    layer_kwargs: passed to from_torch (act_mode, packing, method, per_channel...).

    A module registered in several places (model.a = model.b = lin) gets one
    replacement, set in every place, so they stay one module; the report
    lists it once, under its first name (ConvertReport.aliases has the
    others). It is excluded if any of its names is.

    Returns (model, ConvertReport).
    """
    if errors not in ("warn", "raise"):
        raise ValueError(f"convert: errors={errors!r} must be 'warn' or 'raise'")
    if isinstance(min_cosine, bool) or not isinstance(min_cosine, (int, float)) or \
            not -1 <= min_cosine <= 1:
        raise ValueError(f"convert: min_cosine={min_cosine!r} must be a number in [-1, 1]")
    if calibration is not None:
        drift.check_calibration(calibration)
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
    for key, (child, names) in list(targets.items()):
        if len(names) > 1:
            report.aliases[names[0]] = names[1:]
        if any(_excluded(n, child, exclude) for n in names):
            report.excluded.append(names[0])
            del targets[key]
    holders = _fp_holders(model, targets)
    for key, (child, names) in list(targets.items()):
        w = getattr(child, "weight", None)
        tied = holders.get(_storage_key(w)) if isinstance(w, torch.Tensor) else None
        if tied:
            report.tied[names[0]] = tied
            if not convert_tied:
                del targets[key]
    # The fp outputs come first: with inplace=True there is no other fp model.
    recording = (drift.record(model, calibration, {names[0]: m for m, names in targets.values()})
                 if calibration is not None else None)
    # Frames of live packed weights only: the count sweeps those of dead ones.
    held_before, frames_before = _held_bytes(model), frame_cache_info()["bytes"]
    weights = {}  # storage key -> bytes of the replaced layers' fp weights
    for child, names in targets.values():
        name = names[0]
        replacement = mapping[type(child)]
        new = None
        try:
            target = device
            if target is None:
                p = next(child.parameters(), None)
                target = p.device if p is not None else torch.device("cpu")
            fp_weights = {_storage_key(p): p.numel() * p.element_size()
                          for n, p in child.named_parameters() if n == "weight"}
            new = replacement.from_torch(child, **layer_kwargs)
            new.layer_name = name
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
        weights.update(fp_weights)
        report.packed_bytes += new.packed_bytes() if hasattr(new, "packed_bytes") else 0
    report.fp_bytes = sum(weights.values())
    report.frame_bytes = frame_cache_info()["bytes"] - frames_before
    # What the model holds less, the packed weights (new storages) set aside.
    report.freed_bytes = held_before - _held_bytes(model) + report.packed_bytes
    if recording is not None:
        report.drift, report.model_drift = drift.compare(model, calibration, recording,
                                                         report.replaced)
        cosine, rel = report.model_drift
        if not cosine >= min_cosine:  # NaN too
            warnings.warn(
                f"tfmbs.convert: post-training ternarization changed the model's outputs a lot: "
                f"cosine {cosine:.3f} to the fp model's on the calibration batch (relative error "
                f"{rel:.3f}; min_cosine={min_cosine}). Ternary weights need quantization-aware "
                f"training or a model trained ternary: convert with keep_latent=True and fine-tune "
                f"in train mode, the straight-through recipe examples/qat_digits.py trains its "
                f"TFMBSLinear layers with.", stacklevel=2)
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
