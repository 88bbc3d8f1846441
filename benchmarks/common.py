"""Shared benchmark plumbing: timing (median of repeats after warm-up) and
result files (benchmarks/results/NAME.json and NAME.md)."""
import json
import os
import platform
import statistics
import time

import torch
import torch_tfmbs  # noqa: F401  (torch.tfmbs: the engine's SIMD level for the notes)


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def median_seconds(fn, repeats=15, warmup=3, min_time=0.0, between=None):
    """Median wall time of fn() over `repeats` runs, after `warmup` runs.
    between: a function run before each call of fn (warm-up included),
    outside the timed span: fn is timed as it runs amid other work."""
    for _ in range(warmup):
        if between is not None:
            between()
        fn()
    times = []
    while len(times) < repeats or sum(times) < min_time:
        if between is not None:
            between()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_seconds_interleaved(fns, repeats=15, warmup=3):
    """Median wall time of each fn, the runs interleaved (a, b, a, b, ...) so
    that drift in the machine's speed hits every side alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def last_level_cache_bytes():
    """The size of the CPU's largest cache as the OS reports it (sysfs), or
    32 MiB where it does not say."""
    sizes = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(os.path.join(base, entry, "size")) as f:
                text = f.read().strip()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * unit)
    return max(sizes, default=32 << 20)


def read_bandwidth():
    """Bytes/s of a full-core streaming read (torch.sum over 1 GiB)."""
    import torch  # here: importing this module must not load torch
    big = torch.ones(1 << 28)  # 1 GiB of float32
    t = median_seconds(lambda: big.sum(), repeats=15, warmup=3)
    return big.numel() * 4 / t


def write_results(name, title, columns, rows, notes=()):
    """Writes rows (dicts keyed by columns) as JSON and a markdown table."""
    os.makedirs(RESULTS, exist_ok=True)
    meta = {"machine": platform.machine(), "cores": os.cpu_count(),
            "engine_isa": torch.tfmbs.get_device_properties(0).engine_isa,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY") or "unset (libgomp's default)",
            "notes": list(notes)}
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump({"title": title, "meta": meta, "rows": rows}, f, indent=2)
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    lines += [""] + [f"- {n}" for n in notes] + [f"- OMP_WAIT_POLICY={meta['OMP_WAIT_POLICY']}, "
                                                  f"{meta['cores']} cores, fabric engine ISA "
                                                  f"{meta['engine_isa']}"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
