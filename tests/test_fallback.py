import warnings

import pytest
import torch
import torch.nn.functional as F

import torch_tfmbs
from conftest import run_python


def on_both(fn, *inputs):
    cpu = fn(*inputs)
    dev = fn(*[i.to("tfmbs") for i in inputs])
    return cpu, dev


@pytest.mark.parametrize("name,fn", [
    ("add", lambda a, b: a + b),
    ("matmul", lambda a, b: a @ b.T),
    ("softmax", lambda a, b: F.softmax(a, dim=-1)),
    ("layer_norm", lambda a, b: F.layer_norm(a, a.shape[-1:])),
    ("gelu", lambda a, b: F.gelu(a)),
    ("cat", lambda a, b: torch.cat([a, b, a], dim=0)),
    ("sort", lambda a, b: torch.sort(a, dim=1).values),
    ("index", lambda a, b: a[torch.tensor([2, 0, 2])]),
    ("where", lambda a, b: torch.where(a > 0, a, b)),
    ("cumsum", lambda a, b: torch.cumsum(a, 0)),
    ("nonzero", lambda a, b: torch.nonzero(a > 0.5)),
    ("unique", lambda a, b: torch.unique((a * 3).round())),
    ("max_dim", lambda a, b: torch.max(a, dim=1).indices),
])
def test_results_equal_cpu(name, fn):
    a = torch.randn(6, 5)
    b = torch.randn(6, 5)
    cpu, dev = on_both(fn, a, b)
    assert dev.device.type == "tfmbs"
    assert torch.equal(dev.cpu(), cpu), name


def test_fallback_is_counted_per_op():
    torch_tfmbs.reset_fallback_stats()
    a = torch.ones(3, device="tfmbs")
    torch.lgamma(a)
    torch.lgamma(a)
    torch.sin(a)  # a host kernel: not a fallback
    stats = torch_tfmbs.fallback_stats()
    assert stats == {"aten::lgamma": 2}
    torch_tfmbs.reset_fallback_stats()
    assert torch_tfmbs.fallback_stats() == {}


def test_results_stay_in_the_pool_without_copies(clean_memory):
    a = torch.randn(1 << 16, device="tfmbs")
    before = torch.tfmbs.memory_allocated()
    b = torch.lgamma(a)  # a fallback op that allocates its own output
    assert b.device.type == "tfmbs"
    assert torch.tfmbs.memory_allocated() >= before + a.nbytes
    torch_tfmbs.fabric.reset_profile()
    c = a.lgamma()
    counts = torch_tfmbs.fabric.profile_detailed()
    assert (counts["bytes_h2d"], counts["bytes_d2h"]) == (0, 0)
    assert counts["fallback_ops"] == 1
    assert torch.equal(b.cpu(), c.cpu())


def test_in_place_and_out_mutate_the_device_tensor():
    a = torch.arange(6.0, device="tfmbs")
    ptr = a.data_ptr()
    a.mul_(2).add_(1)
    assert a.data_ptr() == ptr
    assert a.cpu().tolist() == [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]
    out = torch.empty(6, device="tfmbs")
    torch.sin(a, out=out)
    assert torch.equal(out.cpu(), torch.sin(a.cpu()))
    small = torch.empty(0, device="tfmbs")  # out= must grow
    torch.cos(a, out=small)
    assert small.shape == (6,) and torch.equal(small.cpu(), torch.cos(a.cpu()))


def test_views_returned_by_fallback_alias_the_input():
    a = torch.zeros(4, 4, device="tfmbs")
    d = torch.diagonal(a)
    d.fill_(5.0)
    assert a.cpu().diagonal().tolist() == [5.0] * 4


def test_random_ops_follow_the_generators():
    torch.manual_seed(3)
    cpu = torch.randn(5)
    torch.manual_seed(3)
    dev = torch.randn(5, device="tfmbs")
    assert torch.equal(cpu, dev.cpu())
    g = torch.Generator(device="tfmbs").manual_seed(11)
    x = torch.randn(4, device="tfmbs", generator=g)
    y = torch.randn(4, device="tfmbs", generator=g)
    ref = torch.Generator().manual_seed(11)
    assert torch.equal(x.cpu(), torch.randn(4, generator=ref))
    assert torch.equal(y.cpu(), torch.randn(4, generator=ref))
    torch.tfmbs.manual_seed(5)
    s = torch.tfmbs.get_rng_state()
    assert isinstance(s, torch.Tensor)
    torch.tfmbs.set_rng_state(s)


def test_warn_mode_warns_once_per_process():
    torch_tfmbs.set_fallback_mode("warn")  # re-arms the one warning
    try:
        a = torch.ones(3, device="tfmbs")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.lgamma(a * 0.5)
            torch.lgamma(a * 0.5)
            torch.digamma(a)
        messages = [str(w.message) for w in caught if "tfmbs" in str(w.message)]
        assert len(messages) == 1, messages
        assert "aten::lgamma" in messages[0] and "fallback_stats()" in messages[0]
    finally:
        torch_tfmbs.set_fallback_mode("allow")


def test_error_mode_names_the_op_and_keeps_data():
    a = torch.arange(4.0, device="tfmbs")
    torch_tfmbs.set_fallback_mode("error")
    try:
        with pytest.raises(NotImplementedError, match="aten::lgamma"):
            torch.lgamma(a)
    finally:
        torch_tfmbs.set_fallback_mode("allow")
    assert a.cpu().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_fallback_mode_from_environment():
    r = run_python("import torch, torch_tfmbs\n"
                   "try:\n    torch.lgamma(torch.tensor([1.0, 2.0]).to('tfmbs'))\n"
                   "except NotImplementedError as e:\n    print('refused', 'aten::lgamma' in str(e))",
                   env={"TFMBS_FALLBACK": "error"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "refused True"
    for bad in ("sometimes", ""):
        r = run_python("import torch, torch_tfmbs\n"
                       "x = torch.empty(2, device='tfmbs')\n"
                       "try:\n    x.lgamma_()\nexcept ValueError as e:\n    print('raised', e)",
                       env={"TFMBS_FALLBACK": bad})
        assert r.returncode == 0, r.stderr  # importing still works: it warns
        assert f"TFMBS_FALLBACK='{bad}'" in r.stderr
        assert r.stdout.startswith("raised") and f"TFMBS_FALLBACK='{bad}'" in r.stdout


def test_mixing_devices_is_an_error():
    with pytest.raises(RuntimeError, match="same device"):
        torch.ones(2, device="tfmbs") + torch.ones(2, device="tfmbs:1")
