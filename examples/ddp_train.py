"""DistributedDataParallel training on tfmbs, one process per device:

    torchrun --nproc_per_node=2 examples/ddp_train.py

Process LOCAL_RANK takes tfmbs:LOCAL_RANK (modulo the devices there are;
TFMBS_NUM_FABRICS=2 gives each of two processes its own). Gradients are
averaged by Gloo straight from device memory (torch_tfmbs/distributed.py),
over TCP, so the same script runs across machines (see the README). A
regression MLP on synthetic data, each rank a DistributedSampler shard; rank
0 prints the loss, and at the end every rank checks it holds rank 0's weights.
"""
import gc
import os

os.environ.setdefault("TFMBS_FALLBACK", "allow")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402

import torch_tfmbs  # noqa: E402,F401


def main(epochs=5):
    dist.init_process_group()  # no backend: Gloo for CPU tensors, "tfmbs_gloo" for tfmbs ones
    rank = dist.get_rank()
    device = torch.device("tfmbs", int(os.environ["LOCAL_RANK"]) % torch.tfmbs.device_count())
    torch.tfmbs.set_device(device)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 32, generator=g)
    y = torch.sin(2 * x @ torch.randn(32, 1, generator=g) / 32 ** 0.5)
    data = TensorDataset(x, y)
    sampler = DistributedSampler(data, seed=0)
    loader = DataLoader(data, batch_size=64, sampler=sampler)

    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 1)).to(device))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        loss_sum = torch.zeros(2, device=device)  # (sum of losses, samples) over the epoch
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()  # DDP all-reduces the gradients here
            opt.step()
            loss_sum[0] += loss.detach() * len(xb)
            loss_sum[1] += len(xb)
        dist.all_reduce(loss_sum)
        if rank == 0:
            print(f"epoch {epoch}: loss {(loss_sum[0] / loss_sum[1]).item():.4f}", flush=True)

    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    rank0 = weights.clone()
    dist.broadcast(rank0, src=0)
    assert torch.equal(weights, rank0), f"rank {rank}'s weights differ from rank 0's"
    print(f"rank {rank}: {weights.numel()} weights on {device}, equal to rank 0's", flush=True)
    # DDP's reducer holds the process groups and sits in reference cycles:
    # left to the interpreter's last collection, Gloo's threads may drop work
    # there, which needs the GIL, and the process aborts ("terminate called
    # without an active exception"; torch's Gloo group does it without tfmbs
    # too). Free it while the interpreter runs.
    del model, opt
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
