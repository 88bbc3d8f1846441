"""Fabric telemetry: the counters the Ternary Fabric keeps in its registers.

profile() / profile_detailed() / profile_tile(t) read the counters of a tfmbs
device accumulated since the last reset_profile(); cycles come from the
fabric's cycle model (see csrc/fabric/telemetry.h), not from wall time, so
they are deterministic.
"""
import torch

from . import _C
from ._device_index import index as _index

LANES = 15  # per tile: kLanesPerTile of csrc/fabric/telemetry.h


def _lane_sums(counters, key):
    sums = [0] * LANES
    for tile in counters["tiles"]:
        for lane, value in enumerate(tile[key]):
            sums[lane] += value
    return sums


def profile(device=None):
    """{"cycles", "utilization", "skips": per-lane skips summed over tiles}.

    "utilization" is the fabric spec's register of that name: active
    lane-cycles, i.e. multiply-accumulates done (a count, not a ratio);
    profile_detailed()'s "lane_utilization" is the ratio."""
    acc = _C.telemetry(_index(device))["accumulated"]
    return {"cycles": acc["cycles"], "utilization": acc["utilization"],
            "skips": _lane_sums(acc, "skips")}


def profile_detailed(device=None):
    """profile() plus per-lane active cycles, overflow flags, DMA wait, ratios,
    bytes moved, residency and host-op counts."""
    t = _C.telemetry(_index(device))
    acc = t["accumulated"]
    result = profile(device)
    active = _lane_sums(acc, "active_cycles")
    total_active = sum(active)
    lane_slots = acc["cycles"] * t["num_tiles"] * LANES
    result.update({
        "active_cycles": active,
        "overflow_flags": [tile["overflow"] for tile in acc["tiles"]],
        "burst_wait_cycles": acc["burst_wait_cycles"],
        "compute_cycles": acc["compute_cycles"],
        "zero_skip_ratio": sum(result["skips"]) / total_active if total_active else 0.0,
        "lane_utilization": acc["utilization"] / lane_slots if lane_slots else 0.0,
        "fabric_ops": t["ops"],
    })
    for key in ("bytes_h2d", "bytes_d2h", "residency_hits", "residency_misses", "evictions",
                "host_ops", "fallback_ops"):
        result[key] = t[key]
    return result


def profile_tile(tile, device=None):
    """The counters of one tile: skips and active cycles per lane, overflow."""
    t = _C.telemetry(_index(device))
    if not 0 <= tile < t["num_tiles"]:
        raise IndexError(f"tile {tile} is out of range: the fabric has {t['num_tiles']} tiles "
                         f"(0..{t['num_tiles'] - 1}; TFMBS_TILES sets the count)")
    counters = t["accumulated"]["tiles"][tile]
    return {"cycles": t["accumulated"]["cycles"], "skips": list(counters["skips"]),
            "active_cycles": list(counters["active_cycles"]), "overflow": counters["overflow"]}


def last_op(device=None):
    """The counters of the most recent fabric op on the device."""
    return _C.telemetry(_index(device))["last_op"]


def reset_profile(device=None):
    _C.reset_telemetry(_index(device))


def tgemm(weight, x, activations="int8", engine="fast"):
    """y[N, M] = x[N, K] @ weight[M, K]^T run directly on a fabric engine.

    weight: int8 trits {-1,0,1}; x: int8 (activations="int8" or "ternary")
    or float32 ("fp32") on a tfmbs device; engine: "fast" (SIMD) or
    "reference" (the lane-level model). Returns int32 (float32 for fp32)
    and adds the op's counters to the device's telemetry. Frames are built
    per call: for a resident layer use torch_tfmbs.nn.TFMBSLinear.
    """
    return torch.ops.tfmbs.fabric_tgemm(weight, x, activations, engine)


def config():
    """The fabric model in use: tiles, lanes per tile, clock (MHz), pool bytes,
    number of fabrics, engine threads and the fast engine's instruction set.
    Set through TFMBS_TILES, TFMBS_CLOCK_MHZ, TFMBS_MEMORY, TFMBS_NUM_FABRICS
    and TFMBS_THREADS before the first import."""
    return _C.fabric_config()
