"""Memory snapshots of the tfmbs pools in torch.cuda.memory._snapshot()'s
format, so torch's own viewers read them: torch.cuda._memory_viz's
segment_plot / trace_plot (HTML), segsum and trace (text).

The pools record block allocations and frees, segment reservations and
releases and out-of-memory failures once _record_memory_history() is on,
with the Python stack of the call that caused each (torch's captured
tracebacks, as CUDA's allocator keeps them; C++ frames are not captured).
An allocated block shows the stack of its allocation while that event is in
the history. Work on the device completes before an op returns, so a free
is requested and completed at once, on the one stream (0).
"""
import pickle
import sys

import torch

from . import _C


# torch.cuda's `context` values: whose stacks are kept.
_STACKS = {None: "none", "state": "alloc", "alloc": "alloc", "all": "all"}


def _record_memory_history(enabled="all", context="all", stacks="all", max_entries=sys.maxsize):
    """As torch.cuda.memory._record_memory_history, for every tfmbs device:
    "all" records the allocation events (the newest `max_entries` per
    device), "state" or None stops and forgets them (a snapshot always has
    the pools' current segments). `context`: whose Python stacks are kept,
    None (nobody's), "state" or "alloc" (allocations'), "all" (allocations'
    and frees'); `stacks` "python" or "all" both keep Python frames only."""
    if enabled not in (None, "state", "all"):
        raise ValueError(f"_record_memory_history: enabled must be None, 'state' or 'all', got {enabled!r}")
    if context not in _STACKS:
        raise ValueError(f"_record_memory_history: context must be None, 'state', 'alloc' or 'all', "
                         f"got {context!r}")
    if stacks not in ("python", "all"):
        raise ValueError(f"_record_memory_history: stacks must be 'python' or 'all', got {stacks!r}")
    if enabled == "all" and max_entries < 1:
        raise ValueError(f"_record_memory_history: max_entries must be >= 1, got {max_entries}")
    for device in range(_C.device_count()):
        _C.record_pool_history(device, max_entries if enabled == "all" else 0, _STACKS[context])


def _block(block, alloc_frames):
    allocated = block["allocated"]
    return {"address": block["address"], "size": block["size"],
            "requested_size": block["requested_size"],
            "state": "active_allocated" if allocated else "inactive",
            "frames": alloc_frames.get(block["address"], []) if allocated else []}


def _segment(device, segment, alloc_frames):
    blocks = [_block(b, alloc_frames) for b in segment["blocks"]]
    allocated = sum(b["size"] for b in blocks if b["state"] == "active_allocated")
    return {"device": device, "address": segment["address"], "total_size": segment["total_size"],
            "allocated_size": allocated, "active_size": allocated,
            "requested_size": sum(b["requested_size"] for b in blocks), "stream": 0,
            "segment_type": segment["segment_type"], "segment_pool_id": (0, 0),
            "is_expandable": False, "frames": [], "blocks": blocks}


def _trace(device):
    entries = []
    for event, address, size, time_us, frames in _C.pool_history(device):
        entry = {"action": event, "addr": address, "size": size, "stream": 0, "time_us": time_us,
                 "frames": frames}
        if event == "free":
            entries.append(dict(entry, action="free_requested"))
            entry["action"] = "free_completed"
        elif event == "oom":
            entry["device_free"] = torch.accelerator.get_memory_info(device)[0]
        entries.append(entry)
    return entries


def _snapshot(device=None):
    """{"segments": [...], "device_traces": [[...] per device]}, as
    torch.cuda.memory._snapshot(): every device's (CUDA's `device` argument
    is ignored there too)."""
    devices = range(_C.device_count())
    traces = [_trace(d) for d in devices]
    segments = []
    for d in devices:
        # A live block's allocation is the newest alloc event at its address.
        alloc_frames = {e["addr"]: e["frames"] for e in traces[d] if e["action"] == "alloc"}
        segments += [_segment(d, s, alloc_frames) for s in _C.pool_segments(d)]
    return {"segments": segments, "device_traces": traces}


def _dump_snapshot(filename="dump_snapshot.pickle"):
    """Pickles _snapshot() to `filename`, as torch.cuda.memory._dump_snapshot."""
    with open(filename, "wb") as f:
        pickle.dump(_snapshot(), f)
