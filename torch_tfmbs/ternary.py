"""Small Python views of the ternary ops' state: the fabric telemetry the
ternary_linear calls add to, the resident frame cache, and which fabric
engine runs them (the fast SIMD engine, or the lane-level reference engine
that defines correct results - for tests)."""
import contextlib

import torch

__all__ = ["fabric_telemetry", "frame_cache_info", "linear_engine"]

_FIELDS = ("ops", "cycles", "compute_cycles", "burst_wait_cycles", "utilization", "skips",
           "active_lane_cycles", "residency_hits", "residency_misses", "evictions", "tiles")


def fabric_telemetry(device=None):
    """Accumulated fabric counters of a tfmbs device, as a dict: ops, cycles,
    compute/burst-wait cycles, utilization (MACs), skips, active lane-cycles,
    residency hits/misses, evictions, tiles; plus zero_skip_ratio and
    utilization_ratio (MACs / (cycles * lanes))."""
    index = -1 if device is None else torch.device("tfmbs", device).index \
        if isinstance(device, int) else torch.device(device).index
    values = torch.ops.tfmbs._telemetry(-1 if index is None else index)
    t = dict(zip(_FIELDS, values))
    t["zero_skip_ratio"] = t["skips"] / t["active_lane_cycles"] if t["active_lane_cycles"] else 0.0
    lanes = t["tiles"] * 15
    t["utilization_ratio"] = t["utilization"] / (t["cycles"] * lanes) if t["cycles"] else 0.0
    return t


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
