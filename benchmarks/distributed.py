"""all_reduce on tfmbs tensors vs Gloo on CPU tensors, 2 processes on this
machine over 127.0.0.1, one group (tfmbs_gloo: the same Gloo serves both),
the two interleaved, sizes 1 to 256 MiB (float32 sum). The goal is >= 0.95x:
tfmbs tensors are reduced in their own memory, with no copy.
"""
import os
import socket

import common
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torch_tfmbs  # noqa: F401

SIZES_MIB = (1, 16, 64, 256)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(rank=rank, world_size=2)  # no backend: tfmbs_gloo
    rows = []
    for mib in SIZES_MIB:
        cpu = torch.ones(mib * 2**18)
        dev = torch.ones(mib * 2**18, device="tfmbs")
        repeats = 21 if mib <= 16 else 7
        # Both ranks run the same interleaved sequence, so each call meets its peer's.
        cpu_t, dev_t = common.median_seconds_interleaved(
            [lambda: dist.all_reduce(cpu), lambda: dist.all_reduce(dev)], repeats, warmup=2)
        rows.append({"MiB": mib, "gloo cpu ms": cpu_t * 1e3, "tfmbs ms": dev_t * 1e3,
                     "cpu / tfmbs": cpu_t / dev_t, "GB/s tfmbs": mib * 2**20 / dev_t / 1e9})
    dist.destroy_process_group()
    if rank == 0:
        results.extend(rows)


def main():
    with mp.Manager() as manager:
        results = manager.list()
        mp.spawn(worker, args=(free_port(), results), nprocs=2, join=True)
        rows = list(results)
    common.write_results("distributed", "all_reduce: tfmbs tensors vs Gloo on CPU tensors (2 processes)",
                         list(rows[0].keys()), rows,
                         ["float32 sum, 2 ranks on one 2-core machine over 127.0.0.1",
                          "cpu / tfmbs >= 0.95: no copies on the tfmbs side"])


if __name__ == "__main__":
    main()
