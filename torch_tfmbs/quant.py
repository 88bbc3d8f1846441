"""Ternary quantization and packing (torch_tfmbs.quant).

ternarize() turns fp weights into trits in {-1, 0, 1} and a scale, so that
weight ~= trits * scale; the pack/unpack functions store trits 5 per byte
(PT-5, 1.6 bits per weight, the fabric's frame format) or 4 per byte (T2B,
also seed 003's pack_ternary layout). Packing runs on CPU and tfmbs tensors
(the tfmbs::pack_* ops) and is bit-exact with csrc/fabric's codecs.

Activation quantization as the fabric's ternary_linear does it
(quantize_activations) is here too, as a readable reference.
"""
import torch

__all__ = ["ternarize", "pack_pt5", "unpack_pt5", "pack_t2b", "unpack_t2b", "pack_ternary",
           "unpack_ternary", "pack", "unpack", "packed_size", "quantize_activations",
           "ACT_MODES", "PACKINGS", "METHODS"]

METHODS = ("absmean", "sign", "threshold")
ACT_MODES = ("int8", "ternary", "none")
PACKINGS = ("pt5", "t2b")
_EPS = 1e-5


def _mean_abs(w, per_channel):
    a = w.abs()
    return a.mean(dim=tuple(range(1, w.dim()))) if per_channel else a.mean()


def ternarize(w, method="absmean", per_channel=False, delta=None):
    """Returns (trits int8 in {-1,0,1}, scale float32) with w ~= trits * scale.

    method:
      "absmean"   BitNet b1.58: scale = mean|w|, trits = clamp(round(w/scale), -1, 1)
                  (round half to even, as torch.round).
      "sign"      the origin's behaviour: trits = sign(w) (0 stays 0),
                  scale = mean|w|.
      "threshold" ternary weight networks: trits = sign(w) where |w| > delta,
                  else 0; delta defaults to 0.7 * mean|w|; scale = mean|w|
                  over the kept weights (mean|w| if none are kept).
    per_channel: one scale per output row (dim 0) instead of one per tensor;
      the scale then has shape [rows], else it is a 0-dim tensor. A zero
      scale is clamped to 1e-5, so the division is defined.
    A weight with NaN or Inf values raises ValueError.
    """
    if method not in METHODS:
        raise ValueError(f"ternarize: method={method!r} is not one of {METHODS}")
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
    if packing == "pt5":
        return (n + 4) // 5
    if packing == "t2b":
        return (n + 3) // 4
    raise ValueError(f"packing={packing!r} is not one of {PACKINGS}")


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


# Seed 003's names: its 2-bit layout is T2B (see csrc/fabric/t2b_codec.h).
def pack_ternary(tensor):
    """Seed 003's pack_ternary: 8 values -> 2 bytes (T2B)."""
    return pack_t2b(tensor)


def unpack_ternary(packed, numel):
    """Seed 003's unpack_ternary (T2B)."""
    return unpack_t2b(packed, numel)


def pack(trits, packing="pt5"):
    if packing == "pt5":
        return pack_pt5(trits)
    if packing == "t2b":
        return pack_t2b(trits)
    raise ValueError(f"packing={packing!r} is not one of {PACKINGS}")


def unpack(packed, n, packing="pt5"):
    if packing == "pt5":
        return unpack_pt5(packed, n)
    if packing == "t2b":
        return unpack_t2b(packed, n)
    raise ValueError(f"packing={packing!r} is not one of {PACKINGS}")


def quantize_activations(x, act_mode="int8"):
    """What ternary_linear feeds the lanes, per token (last dim): returns
    (q, token_scale) with x ~= q * token_scale.

    "int8":    a = max(max|x|, 1e-5); q = clamp(round(x * (127 / a)), -127, 127);
               token_scale = a / 127.
    "ternary": q = sign(x); token_scale = mean|x|.
    """
    x = x.float()
    if act_mode == "int8":
        a = x.abs().amax(dim=-1, keepdim=True).clamp(min=_EPS)
        q = (x * (127.0 / a)).round().clamp(-127, 127)
        return q.to(torch.int8), a / 127.0
    if act_mode == "ternary":
        return torch.sign(x).to(torch.int8), x.abs().double().mean(dim=-1, keepdim=True).float()
    raise ValueError(f"quantize_activations: act_mode={act_mode!r} must be 'int8' or 'ternary'")
