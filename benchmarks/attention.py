"""Sliding-window attention: tfmbs::sliding_window_attention on tfmbs vs CPU
PyTorch's SDPA with the band mask (what a user writes without the op), side
by side in one run: forward, and forward + backward, at lengths 1k and 4k,
window 128, 8 heads of 64 (2 kv heads: grouped-query), fp32. Also the bytes
each allocates beyond its inputs (tfmbs: the pool's peak; CPU: the band
mask's L x L scores are the cost the op avoids).
"""
import common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch
import torch.nn.functional as F

import torch_tfmbs  # noqa: F401
from torch_tfmbs.attention import band_mask, sliding_window_attention

WINDOW, HEADS, KV_HEADS, DIM = 128, 8, 2, 64


def inputs(length, device, grad):
    g = torch.Generator().manual_seed(0)
    shapes = [(1, HEADS, length, DIM), (1, KV_HEADS, length, DIM), (1, KV_HEADS, length, DIM)]
    return [torch.randn(s, generator=g).to(device).requires_grad_(grad) for s in shapes]


def cpu_band(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def main():
    rows = []
    for length in (1024, 4096):
        mask = band_mask(length, WINDOW, True)
        for backward in (False, True):
            cq, ck, cv = inputs(length, "cpu", backward)
            dq, dk, dv = inputs(length, "tfmbs", backward)

            def cpu_run():
                out = cpu_band(cq, ck, cv, mask)
                if backward:
                    out.sum().backward()

            def dev_run():
                out = sliding_window_attention(dq, dk, dv, WINDOW)
                if backward:
                    out.sum().backward()
            repeats = 5 if length == 4096 else 11
            cpu_t = common.median_seconds(cpu_run, repeats, warmup=1)
            torch.tfmbs.reset_peak_memory_stats()
            base = torch.tfmbs.memory_allocated()
            dev_t = common.median_seconds(dev_run, repeats, warmup=1)
            peak = torch.tfmbs.max_memory_allocated() - base
            with torch.no_grad():
                diff = (sliding_window_attention(dq, dk, dv, WINDOW).cpu() - cpu_band(cq, ck, cv, mask)).abs().max()
            rows.append({"case": f"L={length}, {'fwd+bwd' if backward else 'forward'}",
                         "cpu SDPA+band ms": cpu_t * 1e3, "tfmbs op ms": dev_t * 1e3,
                         "tfmbs / cpu": dev_t / cpu_t, "tfmbs peak MiB": peak / 2**20,
                         "band scores MiB": HEADS * length * length * 4 / 2**20,
                         "max abs diff": float(diff)})
    common.write_results("attention", "Sliding-window attention: tfmbs op vs CPU SDPA with the band mask",
                         list(rows[0].keys()), rows,
                         [f"window {WINDOW}, {HEADS} heads ({KV_HEADS} kv), head dim {DIM}, fp32, batch 1",
                          "band scores MiB: the L x L scores a dense kernel materialises per batch"])


if __name__ == "__main__":
    main()
