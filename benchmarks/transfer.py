"""CPU <-> tfmbs copy speed as a ratio to a plain memcpy of the same bytes.

Goal (issue 4): ratio >= 0.8 at >= 64 MiB. The memcpy baseline is
torch's CPU copy_ between two preallocated CPU tensors (one memcpy).
"""
import common
import torch

import torch_tfmbs  # noqa: F401

MiB = 1 << 20


def main():
    rows = []
    for mib in (1, 4, 16, 64, 256):
        n = mib * MiB
        src = torch.randint(0, 255, (n,), dtype=torch.uint8)
        dst = torch.empty_like(src)
        dev = torch.empty(n, dtype=torch.uint8, device="tfmbs")
        back = torch.empty(n, dtype=torch.uint8)
        repeats = 30 if mib < 64 else 9
        memcpy = common.median_seconds(lambda: dst.copy_(src), repeats)
        h2d = common.median_seconds(lambda: dev.copy_(src), repeats)
        d2h = common.median_seconds(lambda: back.copy_(dev), repeats)
        alloc_h2d = common.median_seconds(lambda: src.to("tfmbs"), repeats)
        assert torch.equal(back, src)
        gbps = lambda t: n / t / 1e9  # noqa: E731
        rows.append({"MiB": mib, "memcpy GB/s": gbps(memcpy),
                     "cpu->tfmbs GB/s": gbps(h2d), "tfmbs->cpu GB/s": gbps(d2h),
                     "h2d / memcpy": memcpy / h2d, "d2h / memcpy": memcpy / d2h,
                     ".to(tfmbs) / memcpy": memcpy / alloc_h2d})
    common.write_results(
        "transfer", "CPU <-> tfmbs transfers vs memcpy",
        list(rows[0].keys()), rows,
        ["ratio = memcpy time / transfer time (1.0 = as fast as memcpy; goal >= 0.8 at >= 64 MiB)",
         "h2d/d2h copy into preallocated tensors; .to(tfmbs) includes allocating in the pool"])


if __name__ == "__main__":
    main()
