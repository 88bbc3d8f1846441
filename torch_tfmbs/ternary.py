"""Small Python views of the ternary ops' state: the fabric telemetry the
ternary_linear calls add to, the resident frame cache, and which fabric
engine runs them (the fast SIMD engine, or the lane-level reference engine
that defines correct results - for tests). Also the autograd formula of
tfmbs::ternary_linear, registered on import."""
import contextlib

import torch

from . import fabric
from .quant import dequantize

__all__ = ["fabric_telemetry", "frame_cache_info", "linear_engine"]


def fabric_telemetry(device=None):
    """The device's accumulated fabric counters as flat totals (ops, cycles,
    compute/burst-wait cycles, MACs, skips, active lane-cycles, residency,
    evictions, ratios): torch_tfmbs.fabric.profile_detailed() summed over
    lanes, for code that wants one number per counter."""
    d = fabric.profile_detailed(device)
    return {"ops": d["fabric_ops"], "cycles": d["cycles"], "compute_cycles": d["compute_cycles"],
            "burst_wait_cycles": d["burst_wait_cycles"], "utilization": d["utilization"],
            "skips": sum(d["skips"]), "active_lane_cycles": sum(d["active_cycles"]),
            "residency_hits": d["residency_hits"], "residency_misses": d["residency_misses"],
            "evictions": d["evictions"], "tiles": len(d["overflow_flags"]),
            "zero_skip_ratio": d["zero_skip_ratio"], "utilization_ratio": d["lane_utilization"]}


def frame_cache_info():
    """{'frames': resident frames cached, 'bytes': their size in the pools}."""
    frames, nbytes = torch.ops.tfmbs._frame_cache_info()
    return {"frames": frames, "bytes": nbytes}


@contextlib.contextmanager
def linear_engine(name):
    """Runs ternary_linear on tfmbs with engine `name` ("fast" or
    "reference") inside the block."""
    previous = torch.ops.tfmbs._set_linear_engine(name)
    try:
        yield
    finally:
        torch.ops.tfmbs._set_linear_engine(previous)


# Autograd of the op itself (the straight-through estimator for direct
# callers): the input gradient uses the quantized weight trits * scale, the
# bias gradient is the sum over tokens, the scale's is exact (below); the
# packed weight is integer data (no gradient). TFMBSLinear adds the latent
# fp weight's straight-through gradient on top (torch_tfmbs.nn), through
# the same helper.
def linear_grads(grad_y, x_shape, x_dtype, x, packed, scale, out_features, in_features, packing,
                 act_mode, need_x, need_scale, need_bias):
    """(grad_x, grad_scale, grad_bias) of ternary_linear, None where not needed.

    y[t, r] = acc[t, r] * token_factor[t] * scale[r] (+ bias[r]), so
    dy/dscale[r] is the op's own output with scale 1 and no bias: computed
    by rerunning the op rather than dividing y by scale (undefined at 0).
    `x` is only read for the scale's gradient."""
    g = grad_y.reshape(-1, out_features).float()
    grad_x = grad_scale = grad_b = None
    if need_x:
        wq = dequantize(packed, scale.detach(), out_features, in_features, packing)
        grad_x = (g @ wq).reshape(x_shape).to(x_dtype)
    if need_scale:
        # float32 input: same accumulators (the op computes in float32
        # anyway) without rounding dy/dscale to a bf16/fp16 output.
        ones = torch.ones_like(scale.detach())
        unit = torch.ops.tfmbs.ternary_linear(x.detach().float(), packed, ones, None, out_features,
                                              in_features, packing, act_mode)
        gu = g * unit.reshape(-1, out_features)
        total = gu.sum(0) if scale.numel() > 1 else gu.sum()
        grad_scale = total.reshape(scale.shape).to(device=scale.device, dtype=scale.dtype)
    if need_bias:
        grad_b = g.sum(0)
    return grad_x, grad_scale, grad_b


def _setup_context(ctx, inputs, output):
    x, packed, scale, bias, out_features, in_features, packing, act_mode = inputs
    # x is kept only when the scale's gradient needs it.
    ctx.save_for_backward(packed, scale, x if scale.requires_grad else None)
    ctx.meta = (x.shape, x.dtype, out_features, in_features, packing, act_mode, bias is not None)


def _backward(ctx, grad_y):
    packed, scale, x = ctx.saved_tensors
    shape, dtype, out_features, in_features, packing, act_mode, has_bias = ctx.meta
    grad_x, grad_scale, grad_b = linear_grads(
        grad_y, shape, dtype, x, packed, scale, out_features, in_features, packing, act_mode,
        need_x=ctx.needs_input_grad[0], need_scale=ctx.needs_input_grad[2],
        need_bias=has_bias and ctx.needs_input_grad[3])
    return grad_x, None, grad_scale, grad_b, None, None, None, None


torch.library.register_autograd("tfmbs::ternary_linear", _backward, setup_context=_setup_context)
