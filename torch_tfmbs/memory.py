"""The CUDA-named memory API of tfmbs devices (torch.tfmbs.memory_*).

The numbers come from the device's fabric-pool allocator through
torch.accelerator (the allocator is a c10::DeviceAllocator); this module
only resolves devices and formats.
"""

import torch

from . import _C
from ._device_index import index as _index


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


def _format_size(size):
    for unit in ("B  ", "KiB", "MiB", "GiB"):
        if abs(size) < 768 * 1024 or unit == "GiB":
            return f"{size:6d} {unit}"
        size //= 1024
    return f"{size:6d} TiB"


def memory_summary(device=None, abbreviated=False):
    """A readable table of the allocator statistics, like torch.cuda's."""
    index = _index(device)
    stats = memory_stats(index)
    pool = _C.pool_info(index)
    rows = [
        ("allocated_bytes", "Allocated memory", _format_size),
        ("active_bytes", "Active memory", _format_size),
        ("requested_bytes", "Requested memory", _format_size),
        ("reserved_bytes", "Reserved memory", _format_size),
        ("inactive_split_bytes", "Non-releasable memory", _format_size),
        ("allocation", "Allocations", lambda n: f"{n:7d}   "),
        ("active", "Active allocs", lambda n: f"{n:7d}   "),
        ("segment", "Reserved segments", lambda n: f"{n:7d}   "),
        ("inactive_split", "Non-releasable allocs", lambda n: f"{n:7d}   "),
    ]
    lines = ["=" * 75,
             f" tfmbs memory summary, device tfmbs:{index}, pool capacity "
             f"{_format_size(pool['capacity']).strip()}",
             "-" * 75,
             f" OOMs: {stats.get('num_ooms', 0):<12d} | cache flush retries: "
             f"{stats.get('num_alloc_retries', 0):<8d}",
             "=" * 75,
             "        Metric         | Cur Usage  | Peak Usage | Tot Alloc  | Tot Freed  "]
    for key, name, fmt in rows:
        lines.append("-" * 75)
        pools = [("all", name)]
        if not abbreviated:
            pools += [("large_pool", "      from large pool"), ("small_pool", "      from small pool")]
        for pool_key, label in pools:
            values = [stats.get(f"{key}.{pool_key}.{m}", 0)
                      for m in ("current", "peak", "allocated", "freed")]
            lines.append(f" {label:<21} | " + " | ".join(fmt(v) for v in values) + " ")
    lines.append("-" * 75)
    for kind in ("resident", "transient"):
        s = pool[f"{kind}_bytes"]
        lines.append(f" {kind.capitalize() + ' (by kind)':<21} | {_format_size(s['current'])} | "
                     f"{_format_size(s['peak'])} |")
    lines.append("=" * 75)
    return "|" + "|\n|".join(lines) + "|\n"


__all__ = [name for name in dir() if not name.startswith("_") and name != "torch"]
