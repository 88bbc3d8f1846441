"""The CUDA-named memory API of tfmbs devices (torch.tfmbs.memory_*).

The numbers come from the device's fabric-pool allocator through
torch.accelerator (the allocator is a c10::DeviceAllocator); this module
only resolves devices and formats.
"""

import torch

from . import _C, _layer_names
from ._device_index import index as _index
from .memory_snapshot import _dump_snapshot, _record_memory_history, _snapshot  # noqa: F401


def memory_stats(device=None):
    """CUDA's flat statistics: "allocated_bytes.all.current", "num_ooms", ..."""
    return torch.accelerator.memory_stats(_index(device))


def memory_stats_as_nested_dict(device=None):
    return torch._C._accelerator_getDeviceStats(_index(device))


def memory_allocated(device=None):
    return memory_stats(device).get("allocated_bytes.all.current", 0)


def max_memory_allocated(device=None):
    return memory_stats(device).get("allocated_bytes.all.peak", 0)


def memory_reserved(device=None):
    return memory_stats(device).get("reserved_bytes.all.current", 0)


def max_memory_reserved(device=None):
    return memory_stats(device).get("reserved_bytes.all.peak", 0)


def reset_peak_memory_stats(device=None):
    torch.accelerator.reset_peak_memory_stats(_index(device))


def reset_max_memory_allocated(device=None):
    reset_peak_memory_stats(device)


def reset_accumulated_memory_stats(device=None):
    torch.accelerator.reset_accumulated_memory_stats(_index(device))


def empty_cache():
    """Returns cached free blocks of every tfmbs pool (and their pages)."""
    torch.accelerator.empty_cache()


def mem_get_info(device=None):
    """(free, total) bytes of the device's pool; free excludes the cache."""
    return torch.accelerator.get_memory_info(_index(device))


_WIDTH = 75  # memory_summary's table, between its borders: torch.cuda.memory_summary's


# The cell formats of torch.cuda.memory_summary. The unit comes from `pref`,
# the metric's "all" value, so that the pool rows under it share its unit.
def _scaled(value, pref, units, base, limit):
    unit = units[0]
    for bigger in units[1:]:
        if pref < limit:
            break
        unit = bigger
        value //= base
        pref /= base
    return value, unit


def _format_size(size, pref):
    size, unit = _scaled(size, pref, ("B  ", "KiB", "MiB", "GiB", "TiB", "PiB"), 1024, 768 * 1024)
    return f"{size:6d} {unit}"


def _format_count(count, pref):
    count, unit = _scaled(count, pref, (" ", "K", "M"), 1000, 750 * 1000)
    return f"{count:7d} {unit} "


_METRICS = (
    ("allocated_bytes", "Allocated memory", _format_size),
    ("active_bytes", "Active memory", _format_size),
    ("requested_bytes", "Requested memory", _format_size),
    ("reserved_bytes", "Reserved memory", _format_size),
    ("inactive_split_bytes", "Non-releasable memory", _format_size),
    ("allocation", "Allocations", _format_count),
    ("active", "Active allocs", _format_count),
    ("segment", "Reserved segments", _format_count),
    ("inactive_split", "Non-releasable allocs", _format_count),
)
_OVERSIZE = (("oversize_allocations", "Oversize allocations"),
             ("oversize_segments", "Oversize segments"))


def _row(label, cells):
    return f" {label:<21} | " + " | ".join(cells) + " "


def memory_summary(device=None, abbreviated=False):
    """A readable table of the allocator statistics, laid out as torch.cuda's,
    with the pool's resident and transient bytes (current, peak), then the
    fabric's resident frames by layer when there are any."""
    index = _index(device)
    stats = memory_stats(index)
    pool = _C.pool_info(index)
    capacity = _format_size(pool["capacity"], pool["capacity"]).strip()
    title = f"tfmbs memory summary, device tfmbs:{index}, pool capacity {capacity}"
    ooms = f"OOMs: {stats.get('num_ooms', 0)}"
    retries = f"cache flush retries: {stats.get('num_alloc_retries', 0)}"
    half = (_WIDTH - 1) // 2
    lines = ["=" * _WIDTH,
             f"{title:^{_WIDTH}}",
             "-" * _WIDTH,
             f"{ooms:^{half}}|{retries:^{half}}",
             "=" * _WIDTH,
             "        Metric         | Cur Usage  | Peak Usage | Tot Alloc  | Tot Freed  "]
    columns = ("current", "peak", "allocated", "freed")
    for key, name, fmt in _METRICS:
        lines.append("-" * _WIDTH)
        prefs = [stats.get(f"{key}.all.{c}", 0) for c in columns]
        pools = [("all", name)]
        if not abbreviated:
            pools += [("large_pool", "      from large pool"), ("small_pool", "      from small pool")]
        for pool_key, label in pools:
            values = [stats.get(f"{key}.{pool_key}.{c}", 0) for c in columns]
            lines.append(_row(label, [fmt(v, p) for v, p in zip(values, prefs)]))
    for key, name in _OVERSIZE:
        lines.append("-" * _WIDTH)
        values = [stats.get(f"{key}.{c}", 0) for c in columns]
        lines.append(_row(name, [_format_count(v, v) for v in values]))
    lines.append("-" * _WIDTH)
    for kind in ("resident", "transient"):
        s = pool[f"{kind}_bytes"]
        # The pool counts these by kind as current and peak only.
        lines.append(_row(f"{kind.capitalize()} (by kind)",
                          [_format_size(s["current"], s["current"]),
                           _format_size(s["peak"], s["peak"]), " " * 10, " " * 10]))
    frames = _C.resident_frames(index)
    if frames:
        names = _layer_names.by_packed_weight(index)
        lines += ["=" * _WIDTH, _frame_row("Resident frames, by layer", "weight", "frame")]
        for f in sorted(frames, key=lambda f: names.get(f["packed_data_ptr"], "")):
            name = names.get(f["packed_data_ptr"], "(a packed tensor of no live layer)")
            lines.append(_frame_row(name, f"{f['rows']}x{f['cols']}",
                                    _format_size(f["bytes"], f["bytes"]).strip()))
    lines.append("=" * _WIDTH)
    return "|" + "|\n|".join(lines) + "|\n"


def _frame_row(name, shape, size):
    # A long path keeps its end, where the layer is named.
    name = name if len(name) <= 45 else "..." + name[-42:]
    return f" {name:<45} | {shape:>12} | {size:>10} "


__all__ = [name for name in dir() if not name.startswith("_") and name != "torch"]
