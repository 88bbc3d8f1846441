"""Small Python views of the ternary ops' state: the fabric telemetry the
ternary_linear calls add to, the resident frame cache, and which fabric
engine runs them (the fast SIMD engine, or the lane-level reference engine
that defines correct results - for tests)."""
import contextlib

import torch

__all__ = ["fabric_telemetry", "frame_cache_info", "linear_engine"]


def fabric_telemetry(device=None):
    """The device's accumulated fabric counters as flat totals (ops, cycles,
    compute/burst-wait cycles, MACs, skips, active lane-cycles, residency,
    evictions, ratios): torch_tfmbs.fabric.profile_detailed() summed over
    lanes, for code that wants one number per counter."""
    from . import fabric

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
# bias gradient is the sum over tokens; the packed weight is integer data
# (no gradient) and the scale is treated as a constant. TFMBSLinear adds the
# latent fp weight's straight-through gradient on top (torch_tfmbs.nn).
def _setup_context(ctx, inputs, output):
    x, packed, scale, bias, out_features, in_features, packing, _act_mode = inputs
    ctx.save_for_backward(packed, scale)
    ctx.meta = (x.shape, x.dtype, out_features, in_features, packing, bias is not None)


def _backward(ctx, grad_y):
    from .nn import dequantize
    packed, scale = ctx.saved_tensors
    shape, dtype, out_features, in_features, packing, has_bias = ctx.meta
    g = grad_y.reshape(-1, out_features).float()
    grad_x = grad_b = None
    if ctx.needs_input_grad[0]:
        wq = dequantize(packed, scale, out_features, in_features, packing)
        grad_x = (g @ wq).reshape(shape).to(dtype)
    if has_bias and ctx.needs_input_grad[3]:
        grad_b = g.sum(0)
    return grad_x, None, None, grad_b, None, None, None, None


torch.library.register_autograd("tfmbs::ternary_linear", _backward, setup_context=_setup_context)
