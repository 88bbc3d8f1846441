"""The host kernels (csrc/aten/HostOps.def): ATen ops whose tfmbs kernel is
PyTorch's CPU kernel run unboxed on device memory."""
import pytest
import torch
import torch.nn.functional as F

import torch_tfmbs
from conftest import run_python
from torch_tfmbs import fabric

HOST_OPS = torch_tfmbs._C.host_ops()
RANDOM_OPS = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
              "bernoulli", "normal", "uniform", "random", "exponential", "multinomial",
              "log_normal", "cauchy", "geometric"}


def schemas():
    found = {}
    for s in torch._C._jit_get_all_schemas():
        if s.name.startswith("aten::"):
            found[s.name[6:] + ("." + s.overload_name if s.overload_name else "")] = s
    return found


def test_the_table_lists_only_ops_a_host_kernel_may_replace():
    all_schemas = schemas()
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    assert len(HOST_OPS) == len(set(HOST_OPS)) > 500
    for name in HOST_OPS:
        schema = all_schemas[name]
        qualified = "aten::" + name
        assert has(qualified, "CPU") or has(qualified, "CompositeExplicitAutograd") or \
            has(qualified, "CompositeExplicitAutogradNonFunctional"), name
        # A backend kernel would hide a composite's autograd formula, unless
        # the op has its own (and CPU runs its CPU kernel, not the composite).
        assert not has(qualified, "CompositeImplicitAutograd") or (
            has(qualified, "CPU") and has(qualified, "Autograd")), name
        assert not any(r.alias_info is not None and not r.alias_info.is_write
                       for r in schema.returns), name  # views are the core ops'
        base = schema.name[6:].rstrip("_")
        if base in RANDOM_OPS:
            assert any("Generator" in str(a.type) for a in schema.arguments), name


def count(fn):
    torch_tfmbs.reset_fallback_stats()
    fabric.reset_profile()
    fn()
    counts = fabric.profile_detailed()
    return counts["host_ops"], counts["fallback_ops"], torch_tfmbs.fallback_stats()


def test_host_kernels_are_counted_as_host_ops_not_fallbacks():
    a, b = torch.randn(4, 5, device="tfmbs"), torch.randn(5, 3, device="tfmbs")
    host_ops, fallback_ops, stats = count(lambda: (a @ b).relu().sum())
    assert (host_ops, fallback_ops, stats) == (3, 0, {})


@pytest.mark.parametrize("make_out", [lambda: torch.empty(1000, device="tfmbs"),
                                      lambda: torch.empty(0, device="tfmbs")])
def test_out_variants_write_into_the_destination(make_out, clean_memory):
    out = make_out()
    torch.tfmbs.reset_peak_memory_stats()
    ptr, fits = out.data_ptr(), out.numel() == 1000
    torch.arange(1000.0, out=out)
    assert torch.equal(out.cpu(), torch.arange(1000.0))
    if fits:  # written in place: no second buffer, not even a temporary
        assert out.data_ptr() == ptr
        assert torch.tfmbs.max_memory_allocated() == torch.tfmbs.memory_allocated()
    x = torch.randn(1000, device="tfmbs")
    torch.mul(x, 2, out=out)
    assert torch.equal(out.cpu(), x.cpu() * 2)


def test_tuple_out_variants_return_the_destinations():
    x = torch.randn(4, 6, device="tfmbs")
    values, indices = torch.empty(0, device="tfmbs"), torch.empty(0, dtype=torch.long, device="tfmbs")
    result = torch.max(x, 1, out=(values, indices))
    assert result.values is values and result.indices is indices
    want = torch.max(x.cpu(), 1)
    assert torch.equal(values.cpu(), want.values) and torch.equal(indices.cpu(), want.indices)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,fn", [
    ("mm", lambda a, b, c: torch.mm(a, b)),
    ("addmm", lambda a, b, c: torch.addmm(c[0], a, b, beta=0.5, alpha=2)),
    ("bmm", lambda a, b, c: torch.bmm(a.expand(2, -1, -1), b.expand(2, -1, -1))),
    ("baddbmm", lambda a, b, c: torch.baddbmm(c, a.expand(2, -1, -1), b.expand(2, -1, -1))),
    ("addbmm", lambda a, b, c: torch.addbmm(c[0], a.expand(2, -1, -1), b.expand(2, -1, -1))),
    ("addmv", lambda a, b, c: torch.addmv(c[0, :, 0], a, b[:, 0])),
    ("mv", lambda a, b, c: torch.mv(a, b[:, 0])),
    ("dot", lambda a, b, c: torch.dot(a[0], b[:, 0])),
    ("vdot", lambda a, b, c: torch.vdot(a[0], b[:, 0])),
    ("linear", lambda a, b, c: F.linear(a, b.t(), c[0, 0])),
    ("matmul 1-D @ 3-D", lambda a, b, c: torch.matmul(a[0], b.expand(3, -1, -1))),
    ("matmul 4-D broadcast", lambda a, b, c: torch.matmul(a.expand(2, 3, -1, -1), b.expand(3, -1, -1))),
    ("addmm_activation", lambda a, b, c: torch._addmm_activation(c[0], a, b, use_gelu=True)),
])
def test_matmul_family_equals_cpu(name, fn, dtype):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 8, generator=g).to(dtype), torch.randn(8, 5, generator=g).to(dtype)
    c = torch.randn(2, 6, 5, generator=g).to(dtype)
    want = fn(a, b, c)
    _, fallback_ops, _ = count(lambda: fn(a.to("tfmbs"), b.to("tfmbs"), c.to("tfmbs")))
    got = fn(a.to("tfmbs"), b.to("tfmbs"), c.to("tfmbs"))
    assert got.device.type == "tfmbs" and fallback_ops == 0
    assert torch.equal(got.cpu(), want), name


def test_matmul_backward_equals_cpu():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 4, 6, generator=g), torch.randn(6, 2, generator=g)
    grads = []
    for device in ("cpu", "tfmbs"):
        x, w = a.to(device).detach().requires_grad_(), b.to(device).detach().requires_grad_()
        torch.matmul(x, w).square().sum().backward()
        grads.append((x.grad.cpu(), w.grad.cpu()))
    assert all(torch.equal(p, q) for p, q in zip(*grads))


@pytest.mark.parametrize("fn", [
    lambda d: torch.mm(torch.ones(2, 3, device=d), torch.ones(4, 5, device=d)),
    lambda d: torch.ones(3, device=d) + torch.ones(4, device=d),
    lambda d: torch.ones(3, device=d).view(3, 1).expand(3, 3).add_(1),
    lambda d: torch.cat([torch.ones(2, 3, device=d), torch.ones(2, 4, device=d)]),
    lambda d: torch.ones(3, device=d).index_select(0, torch.tensor([5], device=d)),
    lambda d: F.nll_loss(torch.randn(2, 3, device=d), torch.tensor([0, 7], device=d)),
    lambda d: torch.ones(2, device=d).bernoulli_(1.5),
])
def test_bad_input_raises_cpus_error_and_keeps_device_data(fn):
    keep = torch.arange(6.0, device="tfmbs")
    errors = []
    for device in ("cpu", "tfmbs"):
        try:
            fn(device)
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - compared below
            errors.append((type(e), str(e).split("\n")[0]))
    assert errors[0] is not None and errors[1] == errors[0]
    assert keep.cpu().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_mixing_devices_is_an_error():
    with pytest.raises(RuntimeError, match="same device"):
        torch.mm(torch.ones(2, 2, device="tfmbs"), torch.ones(2, 2))
    with pytest.raises(RuntimeError, match="same device"):
        torch.ones(2, device="tfmbs").add_(torch.ones(2, device="tfmbs:1"))
    # a 0-dim CPU tensor is a scalar, and indices may be CPU tensors, as on CUDA
    assert torch.equal((torch.ones(2, device="tfmbs") * torch.tensor(3.0)).cpu(), torch.full((2,), 3.0))
    assert torch.arange(4.0, device="tfmbs")[torch.tensor([3, 1])].cpu().tolist() == [3.0, 1.0]


def test_random_host_kernels_draw_from_the_device_generator():
    def draws(d):
        return [torch.randn(5, device=d), torch.empty(6, device=d).uniform_(),
                torch.empty(4, device=d).bernoulli_(0.3), torch.multinomial(torch.ones(8, device=d), 4),
                torch.rand(3, device=d, generator=torch.Generator(d).manual_seed(2))]
    torch.manual_seed(7)
    cpu = draws("cpu")
    torch.manual_seed(7)
    dev = draws("tfmbs")
    cpu_after_dev = draws("cpu")  # the device draws left CPU's stream alone
    for c, d, again in zip(cpu, dev, cpu_after_dev):
        assert d.device.type == "tfmbs" and torch.equal(c, d.cpu()) and torch.equal(c, again)


def test_error_mode_runs_factories_printing_indexing_random_and_ternary_layers():
    code = """
import torch, torch_tfmbs
x = torch.ones(3, device="tfmbs")
text = str(torch.randn(4, 5, device="tfmbs")) + str(torch.tensor([1.5, float("nan")], device="tfmbs"))
def indexing(y):
    y[2:5] = 7; y[y > 3] += 1; y[torch.tensor([1, 2])] = 0
    return y.tolist() if y.device.type == "cpu" else y.cpu().tolist()
z = torch.zeros(2, device="tfmbs") + torch.full((2,), 3.0, device="tfmbs") + torch.eye(2, device="tfmbs")[0]
r = torch.rand(3, device="tfmbs"), torch.randint(0, 5, (3,), device="tfmbs"), torch.randperm(4, device="tfmbs")
torch.randn(3, device="tfmbs").normal_().uniform_().bernoulli_(0.5).random_(0, 4)
m = torch_tfmbs.TFMBSLinear(16, 8).to("tfmbs")
m(torch.randn(2, 16, device="tfmbs")).sum().backward()
torch.linspace(0, 1, 5, device="tfmbs").tolist()
print("ok", indexing(torch.arange(10, device="tfmbs")) == indexing(torch.arange(10)),
      torch_tfmbs.fallback_stats())
"""
    r = run_python(code, env={"TFMBS_FALLBACK": "error"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "ok True {}", r.stdout
