"""Quantization-aware training on the fabric: an MLP of TFMBSLinear layers
(ternary PT-5 weights, int8 activations) trained on tfmbs on scikit-learn's
digits (bundled, offline), with the fabric telemetry and the model's size
packed vs fp32. Callable as main() (returns the test accuracy) for `make demo`.
"""
import os
import time

os.environ.setdefault("TFMBS_FALLBACK", "allow")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import torch_tfmbs  # noqa: E402
from torch_tfmbs.nn import TFMBSLinear  # noqa: E402


def main(epochs=30, verbose=True):
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = nn.Sequential(TFMBSLinear(64, 512, per_channel=True), nn.ReLU(),
                          TFMBSLinear(512, 10, per_channel=True)).to("tfmbs")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xd, yd = x.to("tfmbs"), y.to("tfmbs")
    before = torch_tfmbs.fabric_telemetry(0)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), 64):
            idx = train[order[i:i + 64]].to("tfmbs")
            loss = F.cross_entropy(model(xd[idx]), yd[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    train_s = time.perf_counter() - start
    with torch.no_grad():
        acc = (model(xd[test.to("tfmbs")]).argmax(-1).cpu() == y[test]).float().mean().item()
    t = torch_tfmbs.fabric_telemetry(0)
    d = {k: t[k] - before[k] for k in ("ops", "cycles", "utilization", "skips", "active_lane_cycles",
                                        "residency_hits", "residency_misses")}
    layers = [m for m in model if isinstance(m, TFMBSLinear)]
    fp = sum(m.fp_weight_bytes() for m in layers)
    packed = sum(m.packed_bytes() for m in layers)
    if verbose:
        print(f"QAT on tfmbs: MLP 64-512-10 of TFMBSLinear (ternary weights, int8 activations), "
              f"{epochs} epochs in {train_s:.1f} s")
        print(f"  test accuracy on {len(test)} held-out digits: {acc * 100:.1f}%")
        print(f"  fabric ops {d['ops']}, cycles {d['cycles']:,}, MACs {d['utilization']:,}, "
              f"zero-skip ratio {d['skips'] / max(d['active_lane_cycles'], 1):.3f}, utilization "
              f"{d['utilization'] / max(d['cycles'] * t['tiles'] * 15, 1):.3f}, "
              f"frame hits/misses {d['residency_hits']}/{d['residency_misses']}")
        print(f"  weights: {fp / 1024:.1f} KiB fp32 -> {packed / 1024:.1f} KiB packed PT-5 "
              f"({fp / packed:.1f}x smaller)")
    return {"accuracy": acc, "telemetry": d, "model": model}


if __name__ == "__main__":
    main()
