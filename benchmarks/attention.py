"""Attention on tfmbs, side by side with CPU PyTorch in one run, fp32:
1. F.scaled_dot_product_attention on tfmbs vs on CPU: batch 1, 12 heads of
   64, lengths 512/1024/2048, causal and not; grouped-query (32 query / 8 kv
   heads, enable_gqa=True); decode (1 query, 4096 keys; with and without a
   mask; GQA).
2. tfmbs::sliding_window_attention on tfmbs vs CPU SDPA with the band mask
   (what a user writes without the op), window 256, lengths 4096 and 16384:
   time, and the bytes each needs beyond its inputs (tfmbs: the pool's peak;
   CPU: the L x L band mask it must build).
`--quick` runs the smaller cases only.
"""
import sys

import common
import torch
import torch.nn.functional as F

import torch_tfmbs  # noqa: F401
from torch_tfmbs.attention import band_mask, sliding_window_attention

QUICK = "--quick" in sys.argv
DIM = 64


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def side_by_side(case, cpu_args, fn, repeats, **extra):
    """Times fn(*args) with the CPU args and with their tfmbs copies."""
    dev_args = [a.to("tfmbs") if isinstance(a, torch.Tensor) else a for a in cpu_args]
    cpu_t, dev_t = common.median_seconds_interleaved([lambda: fn(*cpu_args), lambda: fn(*dev_args)],
                                                     repeats, warmup=2)
    diff = (fn(*dev_args).cpu() - fn(*cpu_args)).abs().max()
    return {"case": case, "cpu ms": cpu_t * 1e3, "tfmbs ms": dev_t * 1e3, "cpu / tfmbs": cpu_t / dev_t,
            "max abs diff": float(diff), **extra}


def sdpa_rows():
    rows = []
    sdpa = F.scaled_dot_product_attention
    for length in ((512, 1024) if QUICK else (512, 1024, 2048)):
        q, k, v = (randn(1, 12, length, DIM, seed=s) for s in range(3))
        for causal in (False, True):
            rows.append(side_by_side(f"SDPA L={length}{' causal' if causal else ''}", [q, k, v],
                                     lambda q, k, v, c=causal: sdpa(q, k, v, is_causal=c), 9))
    q, k, v = randn(1, 32, 1024, DIM), randn(1, 8, 1024, DIM, seed=1), randn(1, 8, 1024, DIM, seed=2)
    rows.append(side_by_side("SDPA GQA 32/8 L=1024 causal", [q, k, v],
                             lambda q, k, v: sdpa(q, k, v, is_causal=True, enable_gqa=True), 9))
    q, k, v = randn(1, 12, 1, DIM), randn(1, 12, 4096, DIM, seed=1), randn(1, 12, 4096, DIM, seed=2)
    mask = randn(1, 1, 1, 4096, seed=3) > -1.0
    rows.append(side_by_side("decode Lk=4096", [q, k, v], lambda q, k, v: sdpa(q, k, v), 31))
    rows.append(side_by_side("decode Lk=4096, bool mask", [q, k, v, mask],
                             lambda q, k, v, m: sdpa(q, k, v, attn_mask=m), 31))
    q, k, v = randn(1, 32, 1, DIM), randn(1, 8, 4096, DIM, seed=1), randn(1, 8, 4096, DIM, seed=2)
    rows.append(side_by_side("decode GQA 32/8 Lk=4096", [q, k, v],
                             lambda q, k, v: sdpa(q, k, v, enable_gqa=True), 31))
    return rows


def sliding_window_rows(window=256, heads=8):
    rows = []
    for length in ((4096,) if QUICK else (4096, 16384)):
        q, k, v = (randn(1, heads, length, DIM, seed=s) for s in range(3))
        mask = band_mask(length, window, True)
        dq, dk, dv = (t.to("tfmbs") for t in (q, k, v))
        torch.tfmbs.reset_peak_memory_stats()
        base = torch.tfmbs.memory_allocated()
        sliding_window_attention(dq, dk, dv, window)
        peak = torch.tfmbs.max_memory_allocated() - base
        cpu_t, dev_t = common.median_seconds_interleaved(
            [lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
             lambda: sliding_window_attention(dq, dk, dv, window)], 5 if length == 4096 else 3, warmup=1)
        diff = (sliding_window_attention(dq, dk, dv, window).cpu()
                - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max()
        rows.append({"case": f"sliding window {window}, L={length}", "cpu ms": cpu_t * 1e3,
                     "tfmbs ms": dev_t * 1e3, "cpu / tfmbs": cpu_t / dev_t, "max abs diff": float(diff),
                     "tfmbs peak MiB": peak / 2**20, "cpu band mask MiB": mask.nbytes / 2**20})
    q, k, v = (randn(1, heads, 4096, DIM, seed=s).requires_grad_() for s in range(3))
    dq, dk, dv = (t.detach().to("tfmbs").requires_grad_() for t in (q, k, v))
    mask = band_mask(4096, window, True)
    cpu_t, dev_t = common.median_seconds_interleaved(
        [lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward(),
         lambda: sliding_window_attention(dq, dk, dv, window).sum().backward()], 3, warmup=1)
    q.grad = dq.grad = None
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    sliding_window_attention(dq, dk, dv, window).sum().backward()
    rows.append({"case": f"sliding window {window}, L=4096, forward + backward", "cpu ms": cpu_t * 1e3,
                 "tfmbs ms": dev_t * 1e3, "cpu / tfmbs": cpu_t / dev_t,
                 "max abs diff": float((dq.grad.cpu() - q.grad).abs().max()),
                 "cpu band mask MiB": mask.nbytes / 2**20})
    return rows


def main():
    rows = sdpa_rows() + sliding_window_rows()
    columns = ["case", "cpu ms", "tfmbs ms", "cpu / tfmbs", "max abs diff", "tfmbs peak MiB",
               "cpu band mask MiB"]
    for row in rows:
        for c in columns:
            row.setdefault(c, "")
    common.write_results("attention", "Attention: tfmbs vs CPU PyTorch (cpu / tfmbs > 1: tfmbs faster)",
                         columns, rows,
                         ["SDPA: batch 1, head dim 64, fp32; CPU runs its own SDPA on the same values",
                          "sliding window: 8 heads of 64, causal; CPU runs SDPA with the bool band mask",
                          "tfmbs peak MiB: the pool's peak beyond q, k and v in a forward (the output, log-sum-exp)"])


if __name__ == "__main__":
    main()
