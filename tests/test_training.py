import torch

from conftest import run_python


def make_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))


def train(device, steps=20):
    model = make_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # before the move
    model.to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 10, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    x, y = x.to(device), y.to(device)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model


def test_mlp_trains_identically_on_tfmbs_and_cpu():
    cpu_losses, cpu_model = train("cpu")
    dev_losses, dev_model = train("tfmbs")
    assert dev_losses == cpu_losses
    assert cpu_losses[-1] < cpu_losses[0]
    for p, q in zip(cpu_model.parameters(), dev_model.parameters()):
        assert q.device.type == "tfmbs"
        assert torch.equal(p, q.cpu())


def test_adam_and_grads_on_device():
    model = make_mlp().to("tfmbs")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 10, device="tfmbs")).sum().backward()
    assert all(p.grad.device.type == "tfmbs" for p in model.parameters())
    opt.step()


def test_short_processes_that_run_backward_exit_cleanly():
    code = ("import torch, torch_tfmbs\n"
            "m = torch.nn.Linear(8, 4).to('tfmbs')\n"
            "m(torch.randn(3, 8, device='tfmbs')).sum().backward()\n")
    for _ in range(12):
        r = run_python(code)
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
