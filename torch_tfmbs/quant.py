"""Ternary quantization and packing (torch_tfmbs.quant).

ternarize() turns fp weights into trits in {-1, 0, 1} and a scale, so that
weight ~= trits * scale; the pack/unpack functions store trits 5 per byte
(PT-5, 1.6 bits per weight, the fabric's frame format) or 4 per byte (T2B,
the layout of pack_ternary). Packing runs on CPU and tfmbs tensors (the
tfmbs::pack_* ops) and is bit-exact with csrc/fabric's codecs.

Activation quantization as the fabric's ternary_linear does it
(quantize_activations) is here too, as a readable reference.

The values act_mode, packing and method may take are checked here, by
check_act_mode / check_packing / check_method, for every Python entry
point of the package that takes them.
"""
import warnings

import torch

__all__ = ["ternarize", "pack_pt5", "unpack_pt5", "pack_t2b", "unpack_t2b", "pack_ternary",
           "unpack_ternary", "pack", "unpack", "packed_size", "dequantize", "quantize_activations",
           "ACT_MODES", "PACKINGS", "METHODS", "check_act_mode", "check_packing", "check_method"]

METHODS = ("absmean", "sign", "threshold")
ACT_MODES = ("int8", "ternary", "fp32")
# Old names that still work, with a DeprecationWarning.
_DEPRECATED_ACT_MODES = {"none": "fp32"}
PACKINGS = ("pt5", "t2b")
_EPS = 1e-5


def _check(setting, value, allowed, where):
    if value not in allowed:
        raise ValueError(f"{where}: {setting}={value!r} is not one of {allowed}")
    return value


def check_act_mode(value, where, allowed=ACT_MODES):
    """Returns `value` if it is an activation mode (`allowed`: a subset, for a
    caller that takes fewer), else raises ValueError naming `where`:
    "TFMBSLinear: act_mode='x' is not one of ('int8', 'ternary', 'fp32')".
    The old name "none" is returned as "fp32", with a DeprecationWarning."""
    if value in _DEPRECATED_ACT_MODES and _DEPRECATED_ACT_MODES[value] in allowed:
        warnings.warn(f"{where}: act_mode={value!r} is deprecated; use {_DEPRECATED_ACT_MODES[value]!r}",
                      DeprecationWarning, stacklevel=3)
        return _DEPRECATED_ACT_MODES[value]
    return _check("act_mode", value, allowed, where)


def check_packing(value, where):
    """Returns `value` if it is one of PACKINGS, else raises ValueError."""
    return _check("packing", value, PACKINGS, where)


def check_method(value, where):
    """Returns `value` if it is one of METHODS (ternarize's), else raises ValueError."""
    return _check("method", value, METHODS, where)


def _mean_abs(w, per_channel):
    a = w.abs()
    return a.mean(dim=tuple(range(1, w.dim()))) if per_channel else a.mean()


def ternarize(w, method="absmean", per_channel=False, delta=None):
    """Returns (trits int8 in {-1,0,1}, scale float32) with w ~= trits * scale.

    method:
      "absmean"   BitNet b1.58: scale = mean|w|, trits = clamp(round(w/scale), -1, 1)
                  (round half to even, as torch.round).
      "sign"      the origin design's rule: trits = sign(w) (0 stays 0),
                  scale = mean|w|.
      "threshold" ternary weight networks: trits = sign(w) where |w| > delta,
                  else 0; delta defaults to 0.7 * mean|w|; scale = mean|w|
                  over the kept weights (mean|w| if none are kept).
    per_channel: one scale per output row (dim 0) instead of one per tensor;
      the scale then has shape [rows], else it is a 0-dim tensor. A zero
      scale is clamped to 1e-5, so the division is defined.
    A weight with NaN or Inf values raises ValueError.
    """
    check_method(method, "ternarize")
    if not torch.is_tensor(w) or not w.is_floating_point():
        raise ValueError("ternarize: w must be a floating-point tensor")
    if per_channel and w.dim() < 1:
        raise ValueError("ternarize: per_channel needs at least 1 dimension (rows = dim 0)")
    if delta is not None and method != "threshold":
        raise ValueError(f"ternarize: delta only applies to method='threshold', not {method!r}")
    w = w.detach().float()
    # A NaN or Inf scale (or NaN trits cast to int8) would pack garbage
    # without a word: refuse, and say where the first bad value is.
    finite = torch.isfinite(w)
    if not bool(finite.all()):
        i = int((~finite).reshape(-1).nonzero()[0, 0])
        raise ValueError(f"ternarize: weight has NaN or Inf values (first at index {i} of the "
                         f"flattened weight: {w.reshape(-1)[i].item()})")
    shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()

    def bcast(s):
        return s.reshape(shape) if per_channel else s

    if method == "absmean":
        scale = _mean_abs(w, per_channel).clamp(min=_EPS)
        trits = (w / bcast(scale)).round().clamp(-1, 1)
    elif method == "sign":
        scale = _mean_abs(w, per_channel).clamp(min=_EPS)
        trits = torch.sign(w)
    else:
        if delta is None:
            d = 0.7 * _mean_abs(w, per_channel)
        else:
            d = torch.as_tensor(delta, dtype=torch.float32).to(w.device)
            if bool((d < 0).any()):
                raise ValueError(f"ternarize: delta={delta} must be >= 0")
        keep = w.abs() > (bcast(d) if d.dim() > 0 else d)
        trits = torch.sign(w) * keep
        kept = keep.float()
        if per_channel:
            dims = tuple(range(1, w.dim()))
            num = (w.abs() * kept).sum(dim=dims)
            cnt = kept.sum(dim=dims)
            fallback = _mean_abs(w, True)
        else:
            num, cnt, fallback = (w.abs() * kept).sum(), kept.sum(), _mean_abs(w, False)
        scale = torch.where(cnt > 0, num / cnt.clamp(min=1), fallback).clamp(min=_EPS)
    return trits.to(torch.int8), scale.float()


def packed_size(n, packing="pt5"):
    """Bytes of n trits packed as `packing`."""
    per_byte = {"pt5": 5, "t2b": 4}[check_packing(packing, "packed_size")]
    return (n + per_byte - 1) // per_byte


def pack_pt5(trits):
    """Flattens trits (any shape, values in {-1,0,1}) and packs 5 per byte: uint8 [ceil(n/5)]."""
    return torch.ops.tfmbs.pack_pt5(trits)


def unpack_pt5(packed, n):
    """The first n trits of a PT-5 tensor: int8 [n]. A byte >= 243 raises ValueError."""
    return torch.ops.tfmbs.unpack_pt5(packed, int(n))


def pack_t2b(trits):
    """Packs 4 trits per byte (code = trit + 1, first trit in the low bits): uint8 [ceil(n/4)]."""
    return torch.ops.tfmbs.pack_t2b(trits)


def unpack_t2b(packed, n):
    """The first n trits of a T2B tensor: int8 [n]. A 0b11 code raises ValueError."""
    return torch.ops.tfmbs.unpack_t2b(packed, int(n))


# The origin design's names for its 2-bit packing, kept for code written
# against them: that layout is T2B (see csrc/fabric/t2b_codec.h).
def pack_ternary(tensor):
    """pack_t2b under the origin design's name: 8 values -> 2 bytes."""
    return pack_t2b(tensor)


def unpack_ternary(packed, numel):
    """unpack_t2b under the origin design's name."""
    return unpack_t2b(packed, numel)


def pack(trits, packing="pt5"):
    """pack_pt5 or pack_t2b, by `packing`."""
    check_packing(packing, "pack")
    return pack_pt5(trits) if packing == "pt5" else pack_t2b(trits)


def unpack(packed, n, packing="pt5"):
    """unpack_pt5 or unpack_t2b, by `packing`."""
    check_packing(packing, "unpack")
    return unpack_pt5(packed, n) if packing == "pt5" else unpack_t2b(packed, n)


def dequantize(packed, scale, out_features, in_features, packing="pt5"):
    """trits * scale as an fp32 [out, in] tensor on packed's device (scale:
    one per tensor, or one per output row)."""
    trits = unpack(packed, out_features * in_features, packing).view(out_features, in_features)
    s = scale.float()
    return trits.float() * (s.reshape(-1, 1) if s.numel() > 1 else s.reshape(()))


def quantize_activations(x, act_mode="int8"):
    """What ternary_linear feeds the lanes, per token (last dim): returns
    (q, token_scale) with x ~= q * token_scale.

    "int8":    a = max(max|x|, 1e-5); q = clamp(round(x * (127 / a)), -127, 127);
               token_scale = a / 127.
    "ternary": q = sign(x); token_scale = mean|x|.
    ("fp32" activations have no quantization to show.)
    """
    check_act_mode(act_mode, "quantize_activations", allowed=("int8", "ternary"))
    x = x.float()
    if act_mode == "int8":
        a = x.abs().amax(dim=-1, keepdim=True).clamp(min=_EPS)
        q = (x * (127.0 / a)).round().clamp(-127, 127)
        return q.to(torch.int8), a / 127.0
    return torch.sign(x).to(torch.int8), x.abs().double().mean(dim=-1, keepdim=True).float()
