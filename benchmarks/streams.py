"""What a side stream buys and costs, side by side in one run.

A chain of 8 ternary layers (2048 x 2048, batch 1, no_grad) is run:
- on the default stream (each call on the calling thread), and on a side
  stream (each call queued on the stream's worker): the ratio is the cost of
  the hand-off;
- followed by host work (pure Python, as a data loader's or a tokenizer's),
  and on a side stream with the host work done while the chain runs;
- after a 16 MiB copy from pinned memory, blocking on the default stream, and
  non_blocking on a side stream while the chain runs on the default stream.
Each with torch's threads (the engine's too) at 2 and at 1: with both
cores busy in every engine call there is no core left to overlap with.
Medians of interleaved repeats; ratios > 1 mean the stream side is faster.
"""
import common
import torch

import torch_tfmbs
from torch_tfmbs.nn import TFMBSLinear

LAYERS, WIDTH = 8, 2048


def host_work():
    return sum(i * i for i in range(20_000))


def main():
    torch.manual_seed(0)
    model, _ = torch_tfmbs.convert(torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)]))
    model = model.to("tfmbs").eval()
    assert all(isinstance(m, TFMBSLinear) for m in model)
    x = torch.randn(1, WIDTH, device="tfmbs")
    side = torch.tfmbs.Stream()
    pinned = torch.randn(4 << 20).pin_memory()  # 16 MiB
    target = torch.empty(pinned.shape, device="tfmbs")

    def on_default():
        model(x)

    def on_side():
        with torch.tfmbs.stream(side):
            model(x)
        side.synchronize()

    def default_then_host():
        model(x)
        host_work()

    def side_with_host():
        with torch.tfmbs.stream(side):
            model(x)
        host_work()
        side.synchronize()

    def copy_then_chain():
        target.copy_(pinned)
        model(x)

    def copy_beside_chain():
        with torch.tfmbs.stream(side):
            target.copy_(pinned, non_blocking=True)
        model(x)
        side.synchronize()

    names = ["default", "side", "default+host", "side with host", "copy then chain", "copy beside chain"]
    rows = []
    with torch.no_grad():
        reference = model(x).cpu()
        with torch.tfmbs.stream(side):
            queued = model(x)
        side.synchronize()
        assert torch.equal(queued.cpu(), reference)
        for threads in (2, 1):
            torch.set_num_threads(threads)
            times = common.median_seconds_interleaved(
                [on_default, on_side, default_then_host, side_with_host, copy_then_chain, copy_beside_chain],
                repeats=41, warmup=5)
            t = dict(zip(names, times))
            for case, default, beside in (("chain alone", "default", "side"),
                                          ("chain + host work", "default+host", "side with host"),
                                          ("16 MiB pinned copy + chain", "copy then chain", "copy beside chain")):
                rows.append({"threads": threads, "case": case, "default stream ms": t[default] * 1e3,
                             "side stream ms": t[beside] * 1e3, "default / side": t[default] / t[beside]})
    host = common.median_seconds(host_work, repeats=21)
    common.write_results(
        "streams", "Side streams: hand-off cost and overlap",
        list(rows[0].keys()), rows,
        [f"{LAYERS} TFMBSLinear {WIDTH}x{WIDTH}, batch 1, no_grad; host work alone: {host * 1e3:.2f} ms",
         "default / side > 1: the side stream is faster",
         "chain alone: the hand-off to the stream's worker; chain + host work and the pinned copy: "
         "overlap with the queued work, when the engine leaves a core free"])


if __name__ == "__main__":
    main()
