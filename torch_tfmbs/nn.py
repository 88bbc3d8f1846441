"""TFMBSLinear: nn.Linear with ternary weights on the fabric (torch_tfmbs.nn).

The module keeps latent fp weights (for training) and their packed ternary
form (PT-5 by default: 1.6 bits per weight). It packs on first use or when
moved to tfmbs, and repacks only when the latent weight changes (its
version counter, i.e. an optimizer step or any in-place write, or a new
tensor). On tfmbs the packed weight becomes a resident frame in the
fabric pool, built once per packing and reused by every call.

Training is quantization-aware with a straight-through estimator: the
forward runs the fabric op; the input gradient uses the quantized weight
trits * scale; the latent weight's gradient is that of the quantized
weight, passed straight through the ternarization.
"""
import torch
from torch import nn

from . import _C, _layer_names, quant
from .quant import dequantize
from .ternary import linear_grads

__all__ = ["TFMBSLinear", "TFMBSLinearFunction", "ternary_linear", "dequantize"]


def ternary_linear(x, packed_weight, scale, bias, out_features, in_features, packing="pt5",
                   act_mode="int8"):
    """torch.ops.tfmbs.ternary_linear (see csrc/aten/native/TernaryLinear.h)."""
    return torch.ops.tfmbs.ternary_linear(x, packed_weight, scale, bias, out_features, in_features,
                                          packing, act_mode)


class _TernaryLinearSTE(torch.autograd.Function):
    """Forward on the fabric; backward as a dense linear with the quantized
    weight (input gradient) and straight through to the latent weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, packed, scale, out_features, in_features, packing, act_mode):
        y = torch.ops.tfmbs.ternary_linear(x, packed, scale, bias, out_features, in_features,
                                           packing, act_mode)
        ctx.save_for_backward(x, packed, scale)
        ctx.meta = (out_features, in_features, packing, act_mode, weight is not None,
                    weight.dtype if weight is not None else None)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, packed, scale = ctx.saved_tensors
        out_features, in_features, packing, act_mode, has_weight, wdtype = ctx.meta
        need = ctx.needs_input_grad
        # The op's own gradients (input, scale, bias) ...
        grad_x, grad_scale, grad_b = linear_grads(
            grad_y, x.shape, x.dtype, x, packed, scale, out_features, in_features, packing,
            act_mode, need_x=need[0], need_scale=need[4], need_bias=need[2])
        # ... plus the latent weight's, straight through the ternarization.
        grad_w = None
        if has_weight and need[1]:
            g = grad_y.reshape(-1, out_features).float()
            grad_w = (g.t() @ x.reshape(-1, in_features).float()).to(wdtype)
        return grad_x, grad_w, grad_b, None, grad_scale, None, None, None, None


# The origin design's name for the autograd function, kept for code written
# against it:
# TFMBSLinearFunction.apply(x, latent_weight_or_None, bias, packed, scale,
#                           out_features, in_features, packing, act_mode)
TFMBSLinearFunction = _TernaryLinearSTE


_ternary_linear = torch.ops.tfmbs.ternary_linear.default
_below_autograd = torch._C._AutoDispatchBelowAutograd
# Read once: torch.compile knows the function itself, under any name.
_is_compiling = torch.compiler.is_compiling


def _ternary_linear_no_grad(*args):
    """The op when nothing needs a gradient, past its autograd kernel (a
    Python formula that would only redispatch); while compiling, the plain
    op, which is what gets traced. Inference mode skips autograd kernels
    by itself."""
    if _is_compiling() or torch.is_inference_mode_enabled():
        return _ternary_linear(*args)
    with _below_autograd():
        return _ternary_linear(*args)


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _PackedSource:
    """The latent weight a packing was made from, identified by its storage
    rather than its address: `weight.data = new` keeps the parameter's
    version counter, and the new storage may land on a freed block at the
    same address, so (version, data_ptr) alone can call a new weight old.
    The alias holds the packed storage alive, so no other storage can take
    its address while this record exists.

    An inference tensor has no version counter, so a packing made from one
    (or checked against one) is never current: it is repacked every call.
    """

    __slots__ = ("alias", "version")

    def __init__(self, w):
        self.alias = w.detach()  # same storage and version counter, no autograd history
        self.version = None if w.is_inference() else w._version

    def matches(self, w):
        a = self.alias
        return (w is not None and self.version is not None and not w.is_inference()
                and a.untyped_storage()._cdata == w.untyped_storage()._cdata
                and a.data_ptr() == w.data_ptr() and a.device == w.device and a.dtype == w.dtype
                and a.shape == w.shape and a.stride() == w.stride() and self.version == w._version)


class TFMBSLinear(nn.Linear):
    """Drop-in nn.Linear whose forward runs tfmbs::ternary_linear.

    Extra keyword arguments:
      act_mode     "int8" (per-token absmax, BitNet b1.58; default),
                   "ternary" (sign activations), "fp32" (float activations;
                   "none" is its deprecated name)
      packing      "pt5" (default) or "t2b"
      method, per_channel  how ternarize() quantizes the latent weight
      store_packed state_dict() holds packed_weight + weight_scale (+ bias)
                   instead of the latent fp weight

    The packed weight follows the latent weight: it is repacked when the
    parameter is written in place (an optimizer step, or any in-place op
    under torch.no_grad(): they bump its version counter) or replaced by a
    new tensor (`layer.weight = ...` or `layer.weight.data = ...`, told
    apart by storage, not address). Writes through a `.data` alias
    (`layer.weight.data.copy_(w)`, `layer.weight.data[0] = 1`) bypass the
    version counter and are not seen: write under torch.no_grad() on the
    parameter itself, or call refresh() afterwards.

    Input dtypes: float32, bfloat16 and float16 run on the fabric as they
    are; float64 input is computed in float32 (the op's widest input) and
    the result is returned as float64.

    A layer whose latent weight was dropped (drop_latent(), or convert()
    without keep_latent) cannot learn its weight: a forward in training mode
    that needs gradients raises, rather than train only the bias.
    """

    layer_name = None  # its path in the model, set by convert() (memory_summary shows it)

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *,
                 act_mode="int8", packing="pt5", method="absmean", per_channel=False,
                 store_packed=False):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.act_mode = quant.check_act_mode(act_mode, "TFMBSLinear")
        self.packing = quant.check_packing(packing, "TFMBSLinear")
        self.method = quant.check_method(method, "TFMBSLinear")
        self.per_channel, self.store_packed = per_channel, store_packed
        self.register_buffer("packed_weight", None, persistent=False)
        self.register_buffer("weight_scale", None, persistent=False)
        self._packed_from = None  # _PackedSource of the latent weight packed
        _layer_names.register(self)

    def __setstate__(self, state):  # copies and unpickled layers are layers too
        super().__setstate__(state)
        _layer_names.register(self)

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def from_linear(cls, linear, **kwargs):
        """A TFMBSLinear sharing `linear`'s parameters (no copy)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"TFMBSLinear.from_linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                      dtype=w.dtype, **kwargs)
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    @classmethod
    def from_conv1d(cls, conv, **kwargs):
        """A TFMBSLinear computing what transformers' Conv1D `conv` does
        (x @ weight + bias, weight [in, out]): its weight is a transposed
        copy of conv's, its bias is conv's own."""
        w, nf = getattr(conv, "weight", None), getattr(conv, "nf", None)
        if not (isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[1] == nf):
            raise TypeError(f"TFMBSLinear.from_conv1d: expected a Conv1D (weight [nx, nf] and an "
                            f"`nf` attribute), got {type(conv).__name__}")
        # An nn.Linear stand-in for the layer, so from_linear stays the one way in.
        with torch.device("meta"):
            linear = nn.Linear(w.shape[0], nf, bias=conv.bias is not None, dtype=w.dtype)
        linear.weight = nn.Parameter(w.detach().t().contiguous(), requires_grad=w.requires_grad)
        linear.bias = conv.bias
        linear.train(conv.training)
        return cls.from_linear(linear, **kwargs)

    # convert() drives a replacement through the lifecycle names of
    # TT-Symbiote (Tenstorrent's module replacement): from_torch ->
    # preprocess_weights -> move_weights_to_device, and back.
    @classmethod
    def from_torch(cls, module, **kwargs):
        """from_linear for an nn.Linear, from_conv1d for a Conv1D (recognised
        by its `nf` attribute, not its class: transformers stays optional)."""
        if not isinstance(module, nn.Linear) and hasattr(module, "nf"):
            return cls.from_conv1d(module, **kwargs)
        return cls.from_linear(module, **kwargs)

    def preprocess_weights(self):
        """Ternarizes and packs the latent weight if it changed since the last packing."""
        self._maybe_repack()
        return self

    def move_weights_to_device(self, device="tfmbs"):
        """Moves the module to `device` and, on tfmbs, pins the resident frame."""
        self.to(device)
        return self

    def move_weights_to_host(self):
        self.to("cpu")
        return self

    def deallocate_weights(self):
        """Drops the packed form (and with it the resident frame); the next
        forward repacks from the latent weight, which must exist."""
        if self.weight is None:
            raise RuntimeError("TFMBSLinear.deallocate_weights: the latent weight was dropped; the "
                               "packed weight is the only copy and is kept")
        self.packed_weight = None
        self.weight_scale = None
        self._packed_from = None
        return self

    def drop_latent(self):
        """Frees the latent fp weight (inference only): the packed form stays."""
        self._maybe_repack()
        self.weight = None
        self._packed_from = None
        return self

    def refresh(self):
        """Repacks from the latent weight now, whatever its version says (after
        writes the version counter does not see, e.g. through `.data`). The
        old packed tensor dies, and with it its resident frame (frames are
        keyed by the packed tensor's storage). Nothing to do if the latent
        weight was dropped: the packed form is then the weight."""
        if self.weight is not None:
            self._packed_from = None
            self._maybe_repack()
        return self

    # --------------------------------------------------------------- sizes
    def packed_bytes(self):
        n = quant.packed_size(self.in_features * self.out_features, self.packing)
        s = self.weight_scale.numel() * 4 if self.weight_scale is not None else 4
        return n + s

    def fp_weight_bytes(self):
        return self.weight.numel() * self.weight.element_size() if self.weight is not None else 0

    # -------------------------------------------------------------- packing
    def _packing_current(self):
        return (self.weight is not None and self.packed_weight is not None and
                self._packed_from is not None and self._packed_from.matches(self.weight))

    def _maybe_repack(self):
        if self.weight is None:
            if self.packed_weight is None:
                raise RuntimeError("TFMBSLinear: no latent weight and no packed weight")
            return False
        if self._packing_current():
            return False
        # Not an inference tensor even if packed inside inference_mode: a
        # later training step saves it for backward.
        with torch.inference_mode(False), torch.no_grad():
            trits, scale = quant.ternarize(self.weight, self.method, self.per_channel)
            packed = quant.pack(trits, self.packing)
        self.packed_weight = packed
        self.weight_scale = scale
        self._packed_from = _PackedSource(self.weight)
        self._prepare_frame()
        return True

    def _prepare_frame(self):
        p = self.packed_weight
        if p is not None and p.device.type == "tfmbs":
            torch.ops.tfmbs.prepare_frame(p, self.out_features, self.in_features, self.packing)

    def _apply(self, fn, recurse=True):
        # A packed form that was current stays current when it moves with
        # the latent weight (same values, new place): no repacking.
        w = self.weight
        current = self._packing_current()
        dtype = w.dtype if w is not None else None
        super()._apply(fn, recurse)
        w = self.weight
        # Otherwise forget the old source: it repacks anyway, and the record
        # would hold the old storage alive until then.
        current = current and w.dtype == dtype and self.packed_weight.device == w.device
        self._packed_from = _PackedSource(w) if current else None
        on_device = w if w is not None else self.packed_weight
        if on_device is not None and on_device.device.type == "tfmbs":
            if not self._maybe_repack():
                self._prepare_frame()
        return self

    def dequantized_weight(self):
        """trits * scale, the weight the fabric multiplies by (fp32 [out, in])."""
        self._maybe_repack()
        return dequantize(self.packed_weight, self.weight_scale, self.out_features,
                          self.in_features, self.packing)

    # -------------------------------------------------------------- forward
    def forward(self, x):
        # Inference on a layer whose packed form is the weight: nothing to
        # repack or check, one call into C++, which reads the layer's tensors
        # and settings from its dicts and dispatches the op (None: the call
        # needs the path below: gradients on, a tensor subclass or torch
        # function mode, float64 input, or a weight or bias that is not a
        # plain entry there, as under a parametrization). torch.compile
        # traces the op itself.
        if not _is_compiling():
            y = _C.ternary_linear_forward(self, x)
            if y is not None:
                return y
        self._maybe_repack()
        w, b = self.weight, self.bias
        if w is None and self.training and _needs_grad(x, b):
            # Without the latent weight only the bias would learn: QAT that
            # silently does next to nothing.
            raise RuntimeError(
                "TFMBSLinear: the latent weight was dropped (convert() without keep_latent=True, "
                "or drop_latent()), so training would update only the bias; to train, convert "
                "with keep_latent=True; for inference (or to keep the layer frozen), call .eval() "
                "on it or use torch.no_grad()")
        if x.dtype == torch.float64:
            # The op takes float32/bf16/fp16: compute in float32, hand back float64.
            return self._linear(x.float(), w, b).to(x.dtype)
        return self._linear(x, w, b)

    def _linear(self, x, w, b):
        if _needs_grad(x, w, b):
            return _TernaryLinearSTE.apply(x, w, b, self.packed_weight, self.weight_scale,
                                           self.out_features, self.in_features, self.packing,
                                           self.act_mode)
        return _ternary_linear_no_grad(x, self.packed_weight, self.weight_scale, b, self.out_features,
                                       self.in_features, self.packing, self.act_mode)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, act_mode={self.act_mode!r}, packing={self.packing!r}, "
                f"latent={'yes' if self.weight is not None else 'dropped'}")

    # ----------------------------------------------------------- state_dict
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if not (self.store_packed or self.weight is None):
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        self._maybe_repack()
        destination[prefix + "packed_weight"] = self.packed_weight
        destination[prefix + "weight_scale"] = self.weight_scale
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        pk, sk, wk = prefix + "packed_weight", prefix + "weight_scale", prefix + "weight"
        if pk in state_dict:
            packed = state_dict.pop(pk)
            scale = state_dict.pop(sk, None)
            if scale is None:
                error_msgs.append(f"{pk} is present but {sk} is missing")
                return
            need = quant.packed_size(self.in_features * self.out_features, self.packing)
            if packed.dtype != torch.uint8 or packed.numel() != need:
                error_msgs.append(f"{pk}: expected {need} uint8 bytes ({self.packing} of "
                                  f"{self.out_features}x{self.in_features}), got {packed.numel()} "
                                  f"{packed.dtype}")
                return
            device = (self.weight.device if self.weight is not None else
                      self.packed_weight.device if self.packed_weight is not None else packed.device)
            packed = packed.to(device)
            scale = scale.to(device=device, dtype=torch.float32)
            if self.weight is not None:
                # The latent weight becomes trits * scale; the packed form
                # loaded stays current (re-ternarizing could change the scale).
                state_dict[wk] = dequantize(packed, scale, self.out_features, self.in_features,
                                            self.packing).to(self.weight.dtype)
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
            self.packed_weight, self.weight_scale = packed, scale
            self._packed_from = _PackedSource(self.weight) if self.weight is not None else None
            self._prepare_frame()
            return
        if self.weight is None and wk in state_dict:
            # A latent fp weight loaded into a module that dropped its own:
            # pack it and keep only the packed form.
            w = state_dict.pop(wk)
            with torch.no_grad():
                trits, scale = quant.ternarize(w, self.method, self.per_channel)
            dev = self.packed_weight.device if self.packed_weight is not None else w.device
            self.packed_weight = quant.pack(trits.to(dev), self.packing)
            self.weight_scale = scale.to(dev)
            self._prepare_frame()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._packed_from = None  # the latent weight may have been replaced

    def reset_parameters(self):
        if self.weight is None:
            return
        super().reset_parameters()
        self._packed_from = None


# The attention modules live with their op.
from .attention import FabricAttention, SlidingWindowAttention  # noqa: E402,F401
