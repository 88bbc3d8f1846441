"""Convolutions on tfmbs run CPU's convolution on device memory: CPU's
numbers exactly, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

CASES = [
    ("conv1d", (2, 4, 17), (6, 4, 3), dict(stride=2, padding=1)),
    ("conv2d", (2, 4, 9, 11), (8, 2, 3, 3), dict(padding=1, groups=2, dilation=2)),
    ("conv3d", (1, 2, 5, 6, 7), (3, 2, 2, 3, 3), dict(stride=(1, 2, 1))),
    ("conv_transpose2d", (2, 4, 5, 5), (4, 3, 3, 3), dict(stride=2, output_padding=1)),
]


@pytest.mark.parametrize("name,x_shape,w_shape,kwargs", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_backward_equal_cpu(name, x_shape, w_shape, kwargs, with_bias):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(x_shape, generator=g), torch.randn(w_shape, generator=g)
    channels = w_shape[1] * kwargs.get("groups", 1) if "transpose" in name else w_shape[0]
    b = torch.randn(channels, generator=g) if with_bias else None
    fn = getattr(F, name)
    cpu = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    dev = [t.to("tfmbs").requires_grad_() if t is not None else None for t in (x, w, b)]
    ref = fn(cpu[0], cpu[1], cpu[2], **kwargs)
    out = fn(dev[0], dev[1], dev[2], **kwargs)
    assert out.device.type == "tfmbs"
    assert torch.equal(out.cpu(), ref)
    grad = torch.randn(ref.shape, generator=g)
    ref.backward(grad)
    out.backward(grad.to("tfmbs"))
    for c, d in zip(cpu, dev):
        if c is not None:
            assert torch.equal(d.grad.cpu(), c.grad)


def test_small_cnn_trains_identically():
    def run(device):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                    torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        model.to(device)
        x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
        y = torch.arange(8).remainder(3).to(device)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
    assert run("tfmbs") == run("cpu")


def test_bad_shapes_are_an_error_and_keep_data():
    x = torch.randn(1, 3, 5, 5, device="tfmbs")
    with pytest.raises(RuntimeError, match="channels"):
        F.conv2d(x, torch.randn(2, 4, 3, 3, device="tfmbs"))
    assert x.cpu().shape == (1, 3, 5, 5)
