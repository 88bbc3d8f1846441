"""A training script as one writes it for CUDA, with the device string
changed: DataLoader with pinned memory, AdamW, an LR schedule, gradient
clipping, bf16 autocast with a GradScaler, dropout, and a checkpoint (with
the device's RNG state) saved and resumed. On tfmbs it gives CPU's losses,
step for step, including after the resume."""
import torch
from torch import nn

import torch_tfmbs  # noqa: F401

STEPS, RESUME_AT = 6, 3


class Devices:
    """What a script reaches through its device module: torch.cuda for CUDA
    code, torch.tfmbs here; the CPU reference's equivalents."""

    def __init__(self, device):
        self.device = device
        module = torch.tfmbs if device == "tfmbs" else None
        self.get_rng_state = module.get_rng_state if module else torch.get_rng_state
        self.set_rng_state = module.set_rng_state if module else torch.set_rng_state
        self.scaler = (lambda: module.amp.GradScaler(init_scale=1024.0)) if module else \
            (lambda: torch.amp.GradScaler("cpu", init_scale=1024.0))


def make_training(d):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 3)).to(d.device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    # Seeded after the weights' init (which draws from CPU's generator on
    # every device): dropout then draws the same numbers on either device.
    torch.manual_seed(1)
    return model, opt, sched, d.scaler()


def batches(d):
    g = torch.Generator().manual_seed(7)
    data = torch.utils.data.TensorDataset(torch.randn(STEPS * 8, 12, generator=g),
                                          torch.randint(0, 3, (STEPS * 8,), generator=g))
    # Its own generator: a loader draws its workers' base seed from the
    # default CPU generator otherwise, which dropout on CPU draws from too.
    loader = torch.utils.data.DataLoader(data, batch_size=8, pin_memory=True,
                                         generator=torch.Generator().manual_seed(3))
    for x, y in loader:
        assert x.is_pinned()
        yield x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)


def train(d, steps, state, checkpoint=None):
    model, opt, sched, scaler = state
    losses = []
    for step, (x, y) in enumerate(batches(d)):
        if step < steps[0]:
            continue  # the resumed run skips the batches the first run saw
        if step == steps[1]:
            break
        opt.zero_grad()
        with torch.autocast(d.device, dtype=torch.bfloat16):
            logits = model(x)
        # The loss in fp32, outside the region: the autocast policies of CPU
        # and of tfmbs (CUDA's) differ for cross_entropy (CPU upcasts its
        # input, CUDA's runs log_softmax in the dtype it is given).
        loss = nn.functional.cross_entropy(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(opt)
        scaler.update()
        sched.step()
        losses.append(loss.item())
    if checkpoint is not None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "scaler": scaler.state_dict(), "rng": d.get_rng_state()}, checkpoint)
    return losses


def resume(d, checkpoint):
    model, opt, sched, scaler = make_training(d)
    saved = torch.load(checkpoint, weights_only=False)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    scaler.load_state_dict(saved["scaler"])
    d.set_rng_state(saved["rng"])
    return model, opt, sched, scaler


def losses_with_a_resume(device, path):
    d = Devices(device)
    first = train(d, (0, RESUME_AT), make_training(d), checkpoint=path)
    return first + train(d, (RESUME_AT, STEPS), resume(d, path))


def test_cuda_style_script_gives_cpu_losses_across_a_resume(tmp_path):
    d = Devices("tfmbs")
    straight = train(d, (0, STEPS), make_training(d))
    resumed = losses_with_a_resume("tfmbs", tmp_path / "tfmbs.pt")
    cpu = losses_with_a_resume("cpu", tmp_path / "cpu.pt")
    assert len(cpu) == STEPS
    assert resumed == cpu
    assert straight == cpu
    assert len(set(cpu)) == STEPS  # the steps train: every loss differs
