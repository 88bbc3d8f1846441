"""Reliability of the ternary layers: shared modules in convert(), training
after convert(), repacking when a weight is replaced, NaN/Inf weights,
float64 layers, and the gradient of the op's scale."""
import copy
import re

import pytest
import torch
from torch import nn

import torch_tfmbs
from torch_tfmbs import quant
from torch_tfmbs.convert import fabric_linear
from torch_tfmbs.nn import TFMBSLinear, TFMBSLinearFunction

DEVICES = ["cpu", "tfmbs"]


def fresh_layer(weight, bias, device, **kw):
    """A TFMBSLinear built from scratch with copies of weight and bias."""
    out_f, in_f = weight.shape
    m = TFMBSLinear(in_f, out_f, bias=bias is not None, **kw)
    with torch.no_grad():
        m.weight.copy_(weight.detach().cpu())
        if bias is not None:
            m.bias.copy_(bias.detach().cpu())
    return m.to(device)


# ------------------------------------------------- 1. shared modules in convert

class SharedTwice(nn.Module):
    """One Linear registered as `a` and `b` (and so used twice), then a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        lin = nn.Linear(6, 6)
        self.a = lin
        self.b = lin
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.b(torch.relu(self.a(x))))


@pytest.mark.parametrize("inplace", [True, False])
def test_convert_shared_linear_one_replacement_everywhere(inplace):
    model = SharedTwice().eval()
    original = model.a
    ref_a = fresh_layer(original.weight, original.bias, "cpu")
    ref_head = fresh_layer(model.head.weight, model.head.bias, "cpu")
    x = torch.randn(4, 6)
    conv, report = torch_tfmbs.convert(model, inplace=inplace)
    assert (conv is model) == inplace
    assert isinstance(conv.a, TFMBSLinear) and conv.a is conv.b  # the tie survives
    assert dict(conv._modules) == {"a": conv.a, "b": conv.a, "head": conv.head}
    assert report.replaced == ["a", "head"] and report.aliases == {"a": ["b"]}
    assert report.fp_bytes == 4 * (6 * 6 + 6 * 2)  # the shared weight counted once
    assert report.packed_bytes == quant.packed_size(36) + 4 + quant.packed_size(12) + 4
    if not inplace:
        assert model.a is original and model.b is original and type(original) is nn.Linear
    with torch.no_grad():
        expected = ref_head(ref_a(torch.relu(ref_a(x))))
        assert torch.equal(conv(x), expected)
    # On the device too, with the tie kept by .to()
    conv.to("tfmbs")
    assert conv.a is conv.b and conv.a.packed_weight.device.type == "tfmbs"
    with torch.no_grad():
        assert torch.equal(conv(x.to("tfmbs")).cpu(), expected)


def test_convert_shared_linear_excluded_under_any_name():
    model = SharedTwice()
    conv, report = torch_tfmbs.convert(model, exclude=("b",))
    assert type(conv.a) is nn.Linear and conv.a is conv.b
    assert report.excluded == ["a"] and report.replaced == ["head"]


# ------------------------------------------------ 2. training after convert

def mlp():
    torch.manual_seed(11)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


DROPPED_MSG = ("TFMBSLinear: the latent weight was dropped (convert() without keep_latent=True, "
               "or drop_latent()), so training would update only the bias; to train, convert "
               "with keep_latent=True; for inference (or to keep the layer frozen), call .eval() "
               "on it or use torch.no_grad()")


@pytest.mark.parametrize("device", DEVICES)
def test_training_mode_without_latent_weight_raises(device):
    conv, report = torch_tfmbs.convert(mlp(), device=device)  # train mode, latent dropped
    assert conv.training and conv[0].weight is None and not report.latent_kept
    x = torch.randn(5, 8).to(device)
    with pytest.raises(RuntimeError, match=re.escape(DROPPED_MSG)):
        conv(x).sum().backward()
    # Inference is still fine: under no_grad, or in eval mode even with
    # gradients flowing to the input (a frozen layer).
    with torch.no_grad():
        y = conv(x)
    conv.eval()
    xg = x.detach().clone().requires_grad_()
    y2 = conv(xg)
    y2.sum().backward()
    assert torch.equal(y2.detach().cpu(), y.cpu()) and xg.grad is not None


@pytest.mark.parametrize("device", DEVICES)
def test_train_mode_convert_with_keep_latent_learns_the_weight(device):
    conv, report = torch_tfmbs.convert(mlp(), device=device, keep_latent=True)
    assert conv.training and report.latent_kept
    x = torch.randn(6, 8).to(device)
    target = torch.randn(6, 3).to(device)
    with torch.no_grad():
        y0 = conv(x).cpu()
    w0 = conv[0].weight.detach().cpu().clone()
    opt = torch.optim.SGD(conv.parameters(), lr=0.5)
    loss = (conv(x) - target).pow(2).mean()
    loss.backward()
    g = conv[0].weight.grad.detach().cpu().clone()
    assert g.abs().sum() > 0
    opt.step()
    w1 = conv[0].weight.detach().cpu()
    assert torch.equal(w1, w0 - 0.5 * g)  # plain SGD, checked by hand
    assert not torch.equal(w1, w0)
    with torch.no_grad():
        y1 = conv(x).cpu()
        ref = nn.Sequential(fresh_layer(conv[0].weight, conv[0].bias, "cpu"), nn.ReLU(),
                            fresh_layer(conv[2].weight, conv[2].bias, "cpu"))(x.cpu())
    assert not torch.equal(y1, y0)
    assert torch.equal(y1, ref)  # repacked from the updated latent weights


def test_eval_mode_convert_still_drops_latent():
    model = mlp().eval()
    conv, report = torch_tfmbs.convert(model)
    assert conv[0].weight is None and conv[2].weight is None and not report.latent_kept
    fp = 4 * (8 * 16 + 16 * 3)
    packed = quant.packed_size(128) + 4 + quant.packed_size(48) + 4
    assert report.fp_bytes == fp and report.saved_bytes == fp - packed
    x = torch.randn(3, 8)
    with torch.no_grad():
        ref = nn.Sequential(fresh_layer(model[0].weight, model[0].bias, "cpu"), nn.ReLU(),
                            fresh_layer(model[2].weight, model[2].bias, "cpu"))(x)
        assert torch.equal(conv(x), ref)


# ------------------------------------------- 3. repacking a replaced weight

@pytest.mark.parametrize("device", DEVICES)
def test_weight_data_reassignment_repacks(device):
    torch.manual_seed(12)
    layer = TFMBSLinear(16, 8).to(device)
    x = torch.randn(3, 16).to(device)
    x_host = x.cpu()
    outputs = []
    with torch.no_grad():
        layer(x)
        for i in range(6):
            # Twice in a row without a forward: the second tensor can take
            # the block the packed weight's source had, at the same version.
            layer.weight.data = torch.randn(8, 16).to(device)
            layer.weight.data = torch.randn(8, 16).to(device)
            y = layer(x)
            ref = fresh_layer(layer.weight, layer.bias, device)(x)
            assert torch.equal(y.cpu(), ref.cpu()), i
            # and once per forward
            layer.weight.data = torch.randn(8, 16).to(device)
            y2 = layer(x)
            ref2 = fresh_layer(layer.weight, layer.bias, device)(x)
            assert torch.equal(y2.cpu(), ref2.cpu()), i
            outputs.append((y, ref.cpu().clone()))
    # Earlier results and the input on the device are intact.
    assert torch.equal(x.cpu(), x_host)
    assert all(torch.equal(y.cpu(), r) for y, r in outputs)


@pytest.mark.parametrize("device", DEVICES)
def test_refresh_after_untracked_data_write(device):
    torch.manual_seed(13)
    layer = TFMBSLinear(16, 8).to(device)
    x = torch.randn(3, 16).to(device)
    with torch.no_grad():
        layer(x)
    packed = layer.packed_weight
    new_w = torch.randn(8, 16)
    layer.weight.data.copy_(new_w.to(device))  # bypasses the version counter
    assert layer.refresh() is layer
    assert layer.packed_weight is not packed
    with torch.no_grad():
        ref = fresh_layer(new_w, layer.bias, device)(x)
        assert torch.equal(layer(x).cpu(), ref.cpu())
        # an in-place write on the parameter itself is seen without refresh()
        layer.weight.mul_(-1)
        ref = fresh_layer(-new_w, layer.bias, device)(x)
        assert torch.equal(layer(x).cpu(), ref.cpu())
    # nothing to repack once the latent weight is gone: the packed form stays
    layer.drop_latent()
    packed = layer.packed_weight
    assert layer.refresh().packed_weight is packed


def test_fabric_linear_sees_replaced_weight():
    torch.manual_seed(14)
    lin = nn.Linear(16, 8).to("tfmbs")
    x = torch.randn(3, 16).to("tfmbs")
    with torch.no_grad(), fabric_linear():
        lin(x)
        for i in range(4):
            lin.weight.data = torch.randn(8, 16).to("tfmbs")
            lin.weight.data = torch.randn(8, 16).to("tfmbs")
            y = lin(x)
            ref = fresh_layer(lin.weight, lin.bias, "tfmbs")(x)
            assert torch.equal(y.cpu(), ref.cpu()), i


# ------------------------------------------------------ 4. NaN / Inf weights

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad,text", [(float("nan"), "nan"), (float("inf"), "inf"),
                                      (float("-inf"), "-inf")])
def test_ternarize_rejects_nan_and_inf(device, bad, text):
    w = torch.randn(4, 5)
    w[2, 3] = bad
    w[3, 0] = bad  # a later one: the first is named
    wd = w.to(device)
    msg = ("ternarize: weight has NaN or Inf values "
           f"(first at index 13 of the flattened weight: {text})")
    for method in quant.METHODS:
        for per_channel in (False, True):
            with pytest.raises(ValueError, match=re.escape(msg)):
                quant.ternarize(wd, method, per_channel)
    # Through a layer: the same error, and its weight on the device untouched.
    layer = TFMBSLinear(5, 4).to(device)
    with torch.no_grad():
        layer.weight.copy_(wd)
    with pytest.raises(ValueError, match=re.escape(msg)):
        with torch.no_grad():
            layer(torch.randn(2, 5).to(device))
    assert torch.equal(layer.weight.detach().cpu().nan_to_num(), w.nan_to_num())
    assert torch.equal(layer.weight.detach().cpu().isnan(), w.isnan())


# ------------------------------------------------------------- 5. float64

@pytest.mark.parametrize("device", DEVICES)
def test_float64_layer_computes_in_float32(device):
    torch.manual_seed(15)
    m32 = TFMBSLinear(12, 5).to(device)
    m64 = copy.deepcopy(m32).double()
    built = TFMBSLinear(12, 5, dtype=torch.float64).to(device)
    with torch.no_grad():
        built.weight.copy_(m64.weight)
        built.bias.copy_(m64.bias)
    x = torch.randn(2, 3, 12, dtype=torch.float64).to(device)
    with torch.no_grad():
        expected = m32(x.float()).double()
        for m in (m64, built):
            y = m(x)
            assert y.dtype == torch.float64 and y.device.type == device
            assert torch.equal(y.cpu(), expected.cpu())
    # Training: gradients in float64, equal to the float32 layer's.
    x64 = x.detach().clone().requires_grad_()
    x32 = x.detach().float().requires_grad_()
    gy = torch.randn(2, 3, 5, dtype=torch.float64).to(device)
    m64(x64).backward(gy)
    m32(x32).backward(gy.float())
    assert x64.grad.dtype == m64.weight.grad.dtype == m64.bias.grad.dtype == torch.float64
    assert torch.equal(x64.grad.cpu(), x32.grad.double().cpu())
    assert torch.equal(m64.weight.grad.cpu(), m32.weight.grad.double().cpu())
    assert torch.equal(m64.bias.grad.cpu(), m32.bias.grad.double().cpu())


# ------------------------------------------------------- 6. the scale's gradient

def op(x, packed, scale, bias, m, k, act_mode):
    return torch.ops.tfmbs.ternary_linear(x, packed, scale, bias, m, k, "pt5", act_mode)


@pytest.mark.parametrize("device", DEVICES)
def test_scale_gradient_hand_computed(device):
    # trits [[1, -1], [0, 1]], x = [1, 2]: acc = [1 - 2, 2] = [-1, 2] ("fp32": y = acc * scale)
    packed = quant.pack_pt5(torch.tensor([[1, -1], [0, 1]], dtype=torch.int8)).to(device)
    x = torch.tensor([[1.0, 2.0]]).to(device)
    # one scale: dy/ds = sum(g * acc) = 1 * -1 + 1 * 2 = 1
    s = torch.tensor(0.5, requires_grad=True)  # a 0-dim CPU scale is accepted with tfmbs input
    y = op(x, packed, s, None, 2, 2, "fp32")
    assert y.cpu().tolist() == [[-0.5, 1.0]]
    y.backward(torch.tensor([[1.0, 1.0]]).to(device))
    assert s.grad.shape == () and s.grad.item() == 1.0
    # one scale per row, with a bias: dy/ds[r] = g[r] * acc[r] = [3 * -1, 1 * 2]
    s = torch.tensor([0.5, 2.0]).to(device).requires_grad_()
    b = torch.tensor([0.25, -1.0]).to(device).requires_grad_()
    xg = x.clone().requires_grad_()
    op(xg, packed, s, b, 2, 2, "fp32").backward(torch.tensor([[3.0, 1.0]]).to(device))
    assert s.grad.device.type == device and s.grad.cpu().tolist() == [-3.0, 2.0]
    assert b.grad.cpu().tolist() == [3.0, 1.0]
    # dx = g @ (trits * s) = [3, 1] @ [[0.5, -0.5], [0, 2]] = [1.5, 0.5]
    assert xg.grad.cpu().tolist() == [[1.5, 0.5]]
    # a zero scale has a gradient too (no division by the scale)
    s0 = torch.zeros(2).to(device).requires_grad_()
    op(x, packed, s0, None, 2, 2, "fp32").backward(torch.tensor([[3.0, 1.0]]).to(device))
    assert s0.grad.cpu().tolist() == [-3.0, 2.0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_row", [False, True])
def test_scale_gradient_int8_matches_formula(device, per_row):
    torch.manual_seed(16)
    m, k = 7, 40
    trits = torch.randint(-1, 2, (m, k), dtype=torch.int8)
    packed = quant.pack_pt5(trits)
    x = torch.randn(2, 3, k)
    gy = torch.randn(2, 3, m)
    scale0 = torch.rand(m) + 0.1 if per_row else torch.tensor(0.7)
    # The reference: y = float(acc) * token_scale * scale, acc exact in integers.
    q, token_scale = quant.quantize_activations(x.reshape(-1, k))
    acc = (q.long() @ trits.long().t()).float()
    unit = acc * token_scale
    gu = gy.reshape(-1, m) * unit
    expected = gu.sum(0) if per_row else gu.sum()
    s = scale0.clone().to(device).requires_grad_()
    y = op(x.to(device), packed.to(device), s, None, m, k, "int8")
    y.backward(gy.to(device))
    assert s.grad.shape == scale0.shape
    torch.testing.assert_close(s.grad.cpu(), expected, rtol=1e-6, atol=0)
    if device == "cpu":
        assert torch.equal(s.grad, expected)
    # TFMBSLinear's autograd function gives the scale the same gradient.
    s2 = scale0.clone().to(device).requires_grad_()
    y2 = TFMBSLinearFunction.apply(x.to(device), None, None, packed.to(device), s2, m, k, "pt5",
                                   "int8")
    y2.backward(gy.to(device))
    assert torch.equal(s2.grad.cpu(), s.grad.cpu())
