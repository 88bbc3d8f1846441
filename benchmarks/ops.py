"""Per-op cost of tfmbs vs CPU PyTorch, side by side in one run.

Times ~30 fp32 ops (elementwise, comparison, reductions, softmax, layer_norm,
cumsum, indexing, cat, in-place and out= forms) at 1k, 1M and 16M elements,
a "mixed sequence" of 10 small ops run back to back (the way a user meets
them), and matmuls (mm 128..4096, bmm, addmm, F.linear).
Goals: tfmbs / cpu time <= 1.15 at 1k elements and <= 1.05 at >= 1M;
matmul throughput (GFLOP/s) >= 0.97x CPU.

Each op is run once on both devices before timing: its result is compared to
CPU's (torch.equal; allclose for matmul) and torch_tfmbs.fallback_stats() says
whether it ran as a tfmbs host kernel or through the boxed CPU fallback.
CPU and tfmbs are timed one op after the other, so drift hits both.
`--quick`: a smoke run with few repeats and no 16M-element or 4096 cases.
"""
import argparse

import common
import torch
import torch.nn.functional as F

import torch_tfmbs

SIZES = [("1k", 1000), ("1M", 1 << 20), ("16M", 1 << 24)]
# (repeats, warmup) per size; --quick uses QUICK
FULL = {"1k": (2001, 200), "1M": (51, 5), "16M": (9, 2),
        128: (201, 20), 256: (101, 10), 512: (31, 3), 1024: (15, 2), 2048: (9, 1), 4096: (7, 1)}
QUICK = {"1k": (201, 20), "1M": (5, 1), 128: (5, 1), 256: (5, 1), 512: (3, 1), 1024: (3, 1),
         2048: (3, 1)}

OPS = [
    ("add", lambda t: t["x"] + t["y"]),
    ("mul", lambda t: t["x"] * t["y"]),
    ("div", lambda t: t["x"] / t["y"]),
    ("exp", lambda t: t["x"].exp()),
    ("tanh", lambda t: t["x"].tanh()),
    ("sigmoid", lambda t: t["x"].sigmoid()),
    ("gelu", lambda t: F.gelu(t["x"])),
    ("silu", lambda t: F.silu(t["x"])),
    ("relu", lambda t: t["x"].relu()),
    ("clamp", lambda t: t["x"].clamp(-0.5, 0.5)),
    ("where", lambda t: torch.where(t["mask"], t["x"], t["y"])),
    ("masked_fill", lambda t: t["x"].masked_fill(t["mask"], 0.0)),
    ("eq", lambda t: t["x"] == t["z"]),
    ("sum", lambda t: t["x"].sum()),
    ("mean", lambda t: t["x"].mean()),
    ("amax (last dim)", lambda t: t["x"].amax(-1)),
    ("argmax (last dim)", lambda t: t["x"].argmax(-1)),
    ("softmax (last dim)", lambda t: t["x"].softmax(-1)),
    ("log_softmax (last dim)", lambda t: t["x"].log_softmax(-1)),
    ("layer_norm (last dim)", lambda t: F.layer_norm(t["x"], t["w"].shape, t["w"], t["b"])),
    ("cumsum (last dim)", lambda t: t["x"].cumsum(-1)),
    ("index_select (last dim)", lambda t: t["x"].index_select(-1, t["idx"])),
    ("gather (last dim)", lambda t: t["x"].gather(-1, t["gidx"])),
    ("cat of two halves", lambda t: torch.cat([t["lo"], t["hi"]], -1)),
    ("fill_", lambda t: t["out"].fill_(1.5)),
    ("add_", lambda t: t["acc"].add_(t["y"])),
    ("mul out=", lambda t: torch.mul(t["x"], t["y"], out=t["out"])),
    ("arange out=", lambda t: torch.arange(t["flat"].numel(), out=t["flat"])),
]


def mixed(t):
    """10 different small ops back to back, each feeding the next."""
    a = t["x"] + t["y"]
    b = F.gelu(a * t["y"])
    s = b.sum()
    p = b.softmax(-1)
    ln = F.layer_norm(p, t["w"].shape, t["w"], t["b"])
    c = torch.cat([t["lo"], t["hi"]], -1).index_select(-1, t["idx"])
    return s, torch.where(t["mask"], c, ln).clamp(-1.0, 1.0)


def inputs(n):
    """CPU tensors for one size: [1, 1000] at 1k, else [n / 1024, 1024]."""
    g = torch.Generator().manual_seed(0)
    shape = (1, 1000) if n == 1000 else (n // 1024, 1024)
    d = shape[-1]
    x = torch.randn(shape, generator=g)
    return {"x": x, "y": torch.rand(shape, generator=g) + 0.5, "mask": x > 0,
            "z": torch.where(torch.rand(shape, generator=g) < 0.5, x, -x),
            "w": torch.randn(d, generator=g), "b": torch.randn(d, generator=g),
            "idx": torch.randint(0, d, (d,), generator=g),
            "gidx": torch.randint(0, d, shape, generator=g),
            "lo": x[:, : d // 2].contiguous(), "hi": x[:, d // 2:].contiguous(),
            "out": torch.empty(shape), "flat": torch.empty(n), "acc": x.clone()}


def measure(case, size, cpu_fn, dev_fn, reps, goal, flops=None):
    """One row: checks dev_fn against cpu_fn once, then times both."""
    as_tuple = lambda r: r if isinstance(r, tuple) else (r,)  # noqa: E731
    ref = as_tuple(cpu_fn())
    torch_tfmbs.reset_fallback_stats()
    out = as_tuple(dev_fn())
    fell_back = sorted(torch_tfmbs.fallback_stats())
    if flops:
        equal = all(torch.allclose(r, o.cpu(), rtol=1e-4, atol=1e-3) for r, o in zip(ref, out))
    else:
        equal = all(torch.equal(r, o.cpu()) for r, o in zip(ref, out))
    cpu_t = common.median_seconds(cpu_fn, *reps)
    dev_t = common.median_seconds(dev_fn, *reps)
    gflops = (lambda s: flops / s / 1e9) if flops else (lambda s: "")
    return {"case": case, "elements": size, "cpu us": cpu_t * 1e6, "tfmbs us": dev_t * 1e6,
            "cpu GFLOP/s": gflops(cpu_t), "tfmbs GFLOP/s": gflops(dev_t),
            "tfmbs / cpu": cpu_t / dev_t if flops else dev_t / cpu_t, "goal": goal,
            "runs as": "fallback: " + ", ".join(fell_back) if fell_back else "host kernel",
            "equal": equal}


def op_rows(sizes, repeats):
    rows = []
    for label, n in sizes:
        cpu = inputs(n)
        dev = {k: v.to("tfmbs") for k, v in cpu.items()}
        goal = "<= 1.15" if n == 1000 else "<= 1.05"
        for name, fn in OPS:
            rows.append(measure(name, label, lambda: fn(cpu), lambda: fn(dev),
                                repeats[label], goal))
        if n == 1000:
            rows.append(measure("mixed sequence (10 ops)", label, lambda: mixed(cpu),
                                lambda: mixed(dev), repeats[label], goal))
        del cpu, dev
    return rows


def matmul_rows(sizes, repeats):
    g = torch.Generator().manual_seed(0)
    goal = ">= 0.97 (throughput)"
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    cases = [(f"mm {n}", f"{n}x{n} @ {n}x{n}", torch.mm, (rnd(n, n), rnd(n, n)),
              2 * n ** 3, repeats[n]) for n in sizes]
    cases += [
        ("bmm", "8x512x512 @ 8x512x512", torch.bmm, (rnd(8, 512, 512), rnd(8, 512, 512)),
         2 * 8 * 512 ** 3, repeats[512]),
        ("addmm 1024", "1024 + 1024x1024 @ 1024x1024", torch.addmm,
         (rnd(1024), rnd(1024, 1024), rnd(1024, 1024)), 2 * 1024 ** 3, repeats[1024]),
        ("linear (bias), batch 64", "64x1024 -> 1024", F.linear,
         (rnd(64, 1024), rnd(1024, 1024), rnd(1024)), 2 * 64 * 1024 ** 2, repeats[256]),
    ]
    rows = []
    for case, size, op, args, flops, reps in cases:
        dev = [a.to("tfmbs") for a in args]
        rows.append(measure(case, size, lambda: op(*args), lambda: op(*dev), reps, goal, flops))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few repeats, no 16M elements, no 4096 matmul")
    quick = parser.parse_args().quick
    torch_tfmbs.set_fallback_mode("allow")
    repeats = QUICK if quick else FULL
    sizes = SIZES[:2] if quick else SIZES
    mm_sizes = [128, 256, 512, 1024, 2048] + ([] if quick else [4096])
    rows = op_rows(sizes, repeats) + matmul_rows(mm_sizes, repeats)
    common.write_results(
        "ops", "tfmbs per-op cost vs CPU PyTorch" + (" (--quick)" if quick else ""),
        list(rows[0].keys()), rows,
        ["tfmbs / cpu is the time ratio (lower is better) for ops and the throughput "
         "ratio (higher is better) for matmul",
         "fp32; 1k = [1, 1000], 1M and 16M = [n / 1024, 1024]; dims/indexing on the last dim",
         "runs as: 'host kernel' if fallback_stats() stayed empty, else the ops that fell back",
         "equal: torch.equal to the CPU result (matmul: allclose rtol 1e-4, atol 1e-3)",
         "at 16M elements CPU's allocator maps fresh pages for each result (page faults on "
         "every call) while the tfmbs pool reuses cached blocks, as CUDA's caching allocator "
         "does: those rows compare allocators as much as kernels",
         f"median of {'few (--quick)' if quick else 'repeats'} after warm-up; "
         "ops on tfmbs are synchronous, so no synchronize"])


if __name__ == "__main__":
    main()
