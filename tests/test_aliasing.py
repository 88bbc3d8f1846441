"""Aliasing on tfmbs is CPU's: overlapping writes raise as on CPU, and a
random program of views, in-place ops, copies and out= ops gives CPU's
values and CPU's errors, step by step."""
import random

import pytest
import torch

OVERLAP = "single memory location"


def _run(fn, device):
    """(\"ok\", values) or (\"raise\", exception type, message) of fn(device)."""
    try:
        result = fn(device)
    except Exception as e:  # noqa: BLE001 - the error is the result here
        return ("raise", type(e).__name__, str(e).split("\n")[0])
    return ("ok", result.cpu().tolist())


def _arange(device, *shape):
    n = 1
    for s in shape:
        n *= s
    return torch.arange(float(n), device=device).view(*shape)


def _shift(d):
    x = _arange(d, 6)
    x[1:] = x[:-1]
    return x


def _copy_transpose(d):
    a = _arange(d, 3, 3)
    return a.copy_(a.t())


def _add_transpose(d):
    a = _arange(d, 3, 3)
    return a.add_(a.t())


def _mul_into_transpose(d):
    a = _arange(d, 3, 3)
    a.t().mul_(a)
    return a


def _index_add(d):
    a = _arange(d, 3, 2)
    return a.index_add_(0, torch.tensor([0, 1], device=d), a[1:3])


def _scatter(d):
    a = _arange(d, 3, 2)
    return a.scatter_(0, torch.tensor([[0, 1]], device=d), a[1:2])


def _cumsum_out_view(d):
    x = _arange(d, 6)
    torch.cumsum(x[:5], 0, out=x[1:])
    return x


def _cat_out_input(d):
    x = _arange(d, 6)
    torch.cat([x[:3], x[3:]], out=x)
    return x


def _add_out_shifted(d):
    x = _arange(d, 6)
    torch.add(x[:-1], 1, out=x[1:])
    return x


OVERLAPPING = [_shift, _copy_transpose, _add_transpose, _mul_into_transpose, _index_add, _scatter,
               _cumsum_out_view, _cat_out_input, _add_out_shifted]


@pytest.mark.parametrize("case", OVERLAPPING, ids=lambda f: f.__name__.strip("_"))
def test_overlapping_write_raises_as_on_cpu(case):
    cpu = _run(case, "cpu")
    assert cpu[0] == "raise" and OVERLAP in cpu[2], cpu  # the case is one CPU refuses
    assert _run(case, "tfmbs") == cpu


def test_refused_overlapping_write_leaves_the_tensor_intact():
    x = _arange("tfmbs", 6)
    with pytest.raises(RuntimeError, match=OVERLAP):
        x[1:] = x[:-1]
    assert x.cpu().tolist() == list(range(6))


def test_non_overlapping_views_of_one_storage_still_work():
    # Same storage, disjoint memory: CPU computes, so must tfmbs.
    for dev_fn in (lambda d: _arange(d, 8),):
        results = []
        for d in ("cpu", "tfmbs"):
            x = dev_fn(d)
            x[4:] = x[:4]
            torch.add(x[:2], 1, out=x[6:])
            x[::2].mul_(x[1::2])
            results.append(x.cpu())
        assert torch.equal(results[0], results[1])


# ---------------------------------------------------------------- property test

SHAPE = (4, 6)


def _views(t, rng):
    """A random view of t (shared by both devices through the same choices)."""
    kind = rng.randrange(7)
    if kind == 0:
        return t
    if kind == 1:
        return t.t() if t.dim() == 2 else t
    if kind == 2:
        dim = rng.randrange(t.dim())
        n = t.size(dim)
        start = rng.randrange(n)
        stop = rng.randrange(start, n + 1)
        return t.narrow(dim, start, stop - start)
    if kind == 3:
        return t.reshape(-1) if t.is_contiguous() else t
    if kind == 4:
        dim = rng.randrange(t.dim())
        return t.select(dim, rng.randrange(t.size(dim))) if t.size(dim) > 0 else t
    if kind == 5 and t.dim() >= 1 and t.size(-1) >= 2:
        return t[..., ::2]
    return t.unsqueeze(0)


def _step(base, rng, state):
    """One random op on views of `base`; returns a value to compare or None."""
    a = _views(base, rng)
    b = _views(base, rng)
    op = rng.randrange(10)
    scalar = rng.choice([0.5, -1.0, 2.0])
    if op == 0:
        return a.add_(b)
    if op == 1:
        return a.mul_(scalar)
    if op == 2:
        return a.copy_(b)
    if op == 3:
        return torch.add(a, b, out=state["out"](a))
    if op == 4:
        return torch.mul(b, scalar, out=a) if a.shape == b.shape else a.neg_()
    if op == 5:
        return a.sub_(b, alpha=scalar)
    if op == 6:
        return torch.cumsum(b.reshape(-1), 0, out=a.reshape(-1)) if a.is_contiguous() else a.neg_()
    if op == 7:
        return a.clamp_(min=-50.0, max=50.0)
    if op == 8:
        return a.zero_().add_(b) if rng.random() < 0.5 else a.fill_(scalar)
    return a.sum()


def _program(device, seed, steps):
    rng = random.Random(seed)
    base = torch.arange(float(SHAPE[0] * SHAPE[1]), device=device).view(SHAPE) / 7.0
    scratch = torch.zeros(64, device=device)
    state = {"out": lambda a: scratch[: a.numel()].view(a.shape) if rng.random() < 0.5 else a}
    trace = []
    for _ in range(steps):
        try:
            value = _step(base, rng, state)
            trace.append(("ok", value.cpu().tolist() if value is not None else None))
        except Exception as e:  # noqa: BLE001 - errors are compared with CPU's
            trace.append(("raise", type(e).__name__, str(e).split("\n")[0]))
        trace.append(("base", base.cpu().tolist()))
        # Keep values bounded so that both sides stay finite and comparable.
        if base.abs().amax().item() > 1e6:
            base.div_(1e6)
    return trace


@pytest.mark.parametrize("seed", range(8))
def test_random_alias_programs_match_cpu(seed):
    steps = 400
    cpu = _program("cpu", seed, steps)
    dev = _program("tfmbs", seed, steps)
    assert len(cpu) == len(dev)
    for i, (c, d) in enumerate(zip(cpu, dev)):
        assert c == d, f"step {i // 2}: cpu {c} vs tfmbs {d}"
    # The programs exercise both outcomes.
    assert any(t[0] == "raise" for t in cpu) and any(t[0] == "ok" for t in cpu)


def test_out_resized_by_the_kernel_matches_cpu():
    # The kernel resizes `out` (new storage bytes): the device tensor and a
    # view taken before both behave as on CPU.
    results = []
    for d in ("cpu", "tfmbs"):
        out = torch.zeros(2, device=d)
        torch.add(_arange(d, 3, 4), 1, out=out)
        results.append((out.cpu(), out.shape, out.stride()))
    assert torch.equal(results[0][0], results[1][0]) and results[0][1:] == results[1][1:]
