"""transformers' Conv1D (GPT-2's dense layers: torch.addmm(bias, x, weight)
with weight [in, out]) on the fabric: fabric_linear() routes the addmm,
convert() replaces the module by a TFMBSLinear of the transposed weight.
Both are checked against a CPU reference built from the documented
arithmetic (ternarized weights, int8 per-token activations)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_tfmbs
from torch_tfmbs import quant
from torch_tfmbs.nn import TFMBSLinear
from test_ternary_linear import formula  # the op's arithmetic in plain torch

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

OP = "tfmbs::ternary_linear"


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def token_ids():
    return torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))


class RefLinear(nn.Module):
    """On CPU, what the fabric computes for a linear layer with weight
    [out, in]: absmean-ternarized weight, int8 per-token activations."""

    def __init__(self, weight, bias):
        super().__init__()
        self.trits, self.scale = quant.ternarize(weight.detach().cpu().contiguous())
        self.bias = None if bias is None else bias.detach().cpu()

    def forward(self, x):
        return formula(x, self.trits, self.scale, self.bias, "int8")


def reference_logits(model, ids):
    """The model on CPU with every Conv1D (weight transposed) and nn.Linear
    (lm_head, under fabric_linear a fabric call as well) as a RefLinear."""
    ref = copy.deepcopy(model).cpu()
    for name, m in list(ref.named_modules()):
        if type(m) in (Conv1D, nn.Linear):
            w = m.weight.t() if type(m) is Conv1D else m.weight
            parent, _, child = name.rpartition(".")
            setattr(ref.get_submodule(parent), child, RefLinear(w, m.bias))
    with torch.no_grad():
        return ref(ids).logits


def conv1d_names(model):
    return [n for n, m in model.named_modules() if type(m) is Conv1D]


def fabric_calls(prof):
    return sum(1 for r in prof.rows if r["op"] == OP)


def test_gpt2_fabric_linear_routes_every_conv1d():
    model = gpt2()
    ids = token_ids()
    ref = reference_logits(model, ids)
    n_conv = len(conv1d_names(model))
    assert n_conv == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per layer
    dev = model.to("tfmbs")
    with torch.no_grad(), torch_tfmbs.fabric_linear(), torch_tfmbs.profiler() as prof:
        logits = dev(ids.to("tfmbs")).logits
    ops = [r["op"] for r in prof.rows]
    assert fabric_calls(prof) == n_conv + 1  # + lm_head (F.linear)
    assert "aten::addmm" not in ops and "aten::mm" not in ops
    assert logits.device.type == "tfmbs"
    assert torch.equal(logits.cpu(), ref)


def test_convert_gpt2_replaces_every_conv1d():
    model = gpt2().to("tfmbs")
    ids = token_ids().to("tfmbs")
    names = conv1d_names(model)
    with torch.no_grad(), torch_tfmbs.fabric_linear():
        routed = model(ids).logits.cpu()
    # lm_head's weight is tied to the token embedding: kept fp unless asked.
    _, default = torch_tfmbs.convert(model)
    assert sorted(default.replaced) == sorted(names)
    assert default.tied == {"lm_head": ["transformer.wte.weight"]}
    conv, report = torch_tfmbs.convert(model, convert_tied=True)
    assert sorted(report.replaced) == sorted(names + ["lm_head"]) and not report.failed
    assert not any(type(m) is Conv1D for m in conv.modules())
    c_fc = conv.get_submodule("transformer.h.0.mlp.c_fc")
    assert isinstance(c_fc, TFMBSLinear) and (c_fc.in_features, c_fc.out_features) == (32, 128)
    with torch.no_grad(), torch_tfmbs.profiler() as prof:
        logits = conv(ids).logits
    assert fabric_calls(prof) == len(names) + 1
    assert torch.equal(logits.cpu(), routed)
    assert torch.equal(logits.cpu(), reference_logits(model, ids.cpu()))


def test_from_torch_conv1d_equals_conv1d_with_ternary_weight():
    torch.manual_seed(2)
    c = Conv1D(7, 12)  # nf=7 out, nx=12 in: weight [12, 7]
    nn.init.normal_(c.bias)
    layer = TFMBSLinear.from_torch(c, act_mode="fp32")
    assert layer.weight.shape == (7, 12) and layer.bias is c.bias and layer.act_mode == "fp32"
    x = torch.randn(2, 3, 12)
    trits, scale = quant.ternarize(c.weight.t().contiguous())
    with torch.no_grad():
        expected = torch.addmm(c.bias, x.view(-1, 12), (trits.float() * scale).t()).view(2, 3, 7)
        torch.testing.assert_close(layer(x), expected)
        layer.act_mode = "int8"
        assert torch.equal(layer(x), formula(x, trits, scale, c.bias, "int8"))
    for not_conv1d in (nn.Linear(3, 4), nn.ReLU()):
        with pytest.raises(TypeError, match="Conv1D"):
            TFMBSLinear.from_conv1d(not_conv1d)


def test_addmm_not_a_linear_is_left_to_torch():
    torch.manual_seed(3)
    b, x, w = torch.randn(7), torch.randn(5, 12), torch.randn(12, 7)
    bd, xd, wd = b.to("tfmbs"), x.to("tfmbs"), w.to("tfmbs")
    with torch_tfmbs.fabric_linear(), torch_tfmbs.profiler() as prof:
        cases = [
            (torch.addmm(bd, xd, wd, beta=0.5), torch.addmm(b, x, w, beta=0.5)),
            (torch.addmm(bd, xd, wd, alpha=2), torch.addmm(b, x, w, alpha=2)),
            (bd.addmm(xd, wd, beta=0), b.addmm(x, w, beta=0)),
            # a bias per row, not per output column: not the op's epilogue
            (torch.addmm(bd[:5, None], xd, wd), torch.addmm(b[:5, None], x, w)),
        ]
        on_cpu = torch.addmm(b, x, w)  # not tfmbs: untouched
    assert fabric_calls(prof) == 0
    for got, expected in cases:
        assert got.device.type == "tfmbs" and torch.equal(got.cpu(), expected)
    assert torch.equal(on_cpu, torch.addmm(b, x, w))  # the same, outside the block


def test_addmm_cache_keeps_orientations_apart_and_sees_writes():
    torch.manual_seed(4)
    w = torch.randn(8, 8).to("tfmbs")  # square: usable as F.linear's weight and addmm's
    b = torch.randn(8).to("tfmbs")
    x = torch.randn(3, 8)
    xd = x.to("tfmbs")

    def ref(weight):  # weight [out, in] on CPU
        return formula(x, *quant.ternarize(weight.contiguous()), b.cpu(), "int8")

    with torch.no_grad(), torch_tfmbs.fabric_linear():
        for _ in range(2):  # the second round is served by the cache
            assert torch.equal(F.linear(xd, w, b).cpu(), ref(w.cpu()))
            assert torch.equal(torch.addmm(b, xd, w).cpu(), ref(w.cpu().t()))
        w[0].mul_(-3)  # in place: a new version of w
        assert torch.equal(torch.addmm(b, xd, w).cpu(), ref(w.cpu().t()))
        assert torch.equal(F.linear(xd, w, b).cpu(), ref(w.cpu()))


def test_addmm_training_step_gradients_equal_f_linear_ste():
    torch.manual_seed(5)
    x0, w0, b0 = torch.randn(5, 12), torch.randn(12, 7), torch.randn(7)
    gy = torch.randn(5, 7)

    def leaves(*ts):
        return [t.to("tfmbs").requires_grad_() for t in ts]

    x, w, b = leaves(x0, w0, b0)
    x2, w2, b2 = leaves(x0, w0.t().contiguous(), b0)
    with torch_tfmbs.fabric_linear():
        y = torch.addmm(b, x, w)
        y.backward(gy.to("tfmbs"))
        y2 = F.linear(x2, w2, b2)
        y2.backward(gy.to("tfmbs"))
    assert torch.equal(y.detach().cpu(), y2.detach().cpu())
    assert w.grad.shape == (12, 7) and w.grad.device.type == "tfmbs"
    assert torch.equal(x.grad.cpu(), x2.grad.cpu())
    assert torch.equal(w.grad.cpu(), w2.grad.cpu().t())
    assert torch.equal(b.grad.cpu(), b2.grad.cpu())
    # the step writes w in place; the next call repacks
    torch.optim.SGD([x, w, b], lr=0.5).step()
    with torch.no_grad(), torch_tfmbs.fabric_linear():
        after = torch.addmm(b, x, w).cpu()
    expected = formula(x.detach().cpu(), *quant.ternarize(w.detach().cpu().t().contiguous()),
                       b.detach().cpu(), "int8")
    assert torch.equal(after, expected)
