"""torch.isin on tfmbs (csrc/aten/Isin.cpp): one test element takes eq/ne,
the rest CPU's kernel; either way the result is CPU's, bit for bit, and
where CPU raises, tfmbs raises the same error."""
import itertools
import math

import pytest
import torch

import torch_tfmbs  # noqa: F401

DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
          torch.float32, torch.float64]


def values(dtype, shape, gen):
    """Small values that repeat (so matches happen), and for floats the
    cases whose comparison has rules: NaN, inf, -0.0."""
    t = torch.randint(0, 6, shape, generator=gen).to(dtype)
    if dtype.is_floating_point and t.numel() >= 4:
        flat = t.view(-1)
        flat[0], flat[1], flat[2], flat[3] = math.nan, math.inf, -0.0, 0.0
    return t


def cpu_result(fn):
    try:
        return fn("cpu"), None
    except RuntimeError as e:
        return None, str(e)


@pytest.mark.parametrize("invert", [False, True])
def test_isin_equals_cpu_for_dtype_pairs_and_shapes(invert):
    gen = torch.Generator().manual_seed(0)
    shapes = [((), ()), ((7,), ()), ((7,), (1,)), ((3, 5), (1,)), ((3, 5), (1, 1)), ((0,), (1,)),
              ((), (1,)), ((7,), (3,)), ((2, 3), (2, 2))]
    for (e_dtype, t_dtype), (e_shape, t_shape) in itertools.product(itertools.product(DTYPES, DTYPES), shapes):
        elements, test = values(e_dtype, e_shape, gen), values(t_dtype, t_shape, gen)
        want = torch.isin(elements, test, invert=invert)
        got = torch.isin(elements.to("tfmbs"), test.to("tfmbs"), invert=invert)
        assert got.device.type == "tfmbs" and got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got.cpu(), want), (e_dtype, t_dtype, e_shape, t_shape)


def test_isin_promotes_as_cpu_does():
    # [300] promotes the comparison to int64: nothing matches. A 0-dim 300
    # does not promote int8 (a 0-dim operand's rule): it wraps to 44, which
    # matches on CPU, so it must on tfmbs too.
    elements = torch.tensor([44, 1, -128], dtype=torch.int8)
    for test in (torch.tensor([300]), torch.tensor(300), torch.tensor([2.5]), torch.tensor(1.0)):
        for invert in (False, True):
            want = torch.isin(elements, test, invert=invert)
            assert torch.equal(torch.isin(elements.to("tfmbs"), test.to("tfmbs"), invert=invert).cpu(), want)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.uint16])
def test_isin_raises_cpus_error_for_dtypes_cpu_refuses(dtype):
    elements, test = torch.zeros(4, dtype=dtype), torch.zeros(1, dtype=dtype)
    _, error = cpu_result(lambda d: torch.isin(elements.to(d), test.to(d)))
    assert error is not None
    kept = elements.to("tfmbs")
    with pytest.raises(RuntimeError) as info:
        torch.isin(kept, test.to("tfmbs"))
    assert str(info.value).split("\n")[0] == error.split("\n")[0]
    assert torch.equal(kept.cpu(), elements)


def test_isin_of_a_vocabulary_against_one_token_id():
    # transformers' generate: isin(arange(vocab), eos ids) every step.
    vocab = torch.arange(32000)
    for eos in (torch.tensor([2]), torch.tensor(31999), torch.tensor([5, 2]), torch.tensor([-1])):
        want = torch.isin(vocab, eos)
        assert torch.equal(torch.isin(vocab.to("tfmbs"), eos.to("tfmbs")).cpu(), want)
