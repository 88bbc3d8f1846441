import pytest
import torch

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64]


def sample(dtype, shape=(5, 7)):
    g = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_every_dtype(dtype):
    x = sample(dtype)
    d = x.to("tfmbs")
    assert d.dtype == dtype and d.device.type == "tfmbs"
    assert torch.equal(d.cpu(), x)
    assert torch.equal(d[1:4, ::2].cpu(), x[1:4, ::2])
    assert torch.equal(d.t().contiguous().cpu(), x.t().contiguous())
    assert d[2, 3].item() == x[2, 3].item()


def test_strided_copies_both_ways():
    x = torch.randn(6, 8, 4)
    src = x.permute(2, 0, 1)[:, 1:5, ::3]  # non-contiguous, offset
    d = src.to("tfmbs")
    assert d.shape == src.shape
    assert torch.equal(d.cpu(), src)
    dst = torch.zeros(8, 6, device="tfmbs")
    dst.t()[2:4].copy_(x[2:4, :, 0])
    ref = torch.zeros(8, 6)
    ref.t()[2:4].copy_(x[2:4, :, 0])
    assert torch.equal(dst.cpu(), ref)
    out = torch.empty(4, 4).t()
    out.copy_(torch.arange(16.0, device="tfmbs").view(4, 4))
    assert torch.equal(out, torch.arange(16.0).view(4, 4))


def test_copy_with_broadcast_and_dtype_conversion():
    d = torch.zeros(3, 4, dtype=torch.float64, device="tfmbs")
    d.copy_(torch.arange(4, dtype=torch.int32))
    assert torch.equal(d.cpu(), torch.arange(4, dtype=torch.float64).expand(3, 4))


def test_copy_between_mismatched_sizes_is_a_clear_error():
    d = torch.arange(6.0, device="tfmbs")
    with pytest.raises(RuntimeError, match="must match the size"):
        d.copy_(torch.ones(5))
    assert d.cpu().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_copy_between_devices():
    a = torch.arange(10.0, device="tfmbs:0")
    b = a.to("tfmbs:1")
    assert b.device == torch.device("tfmbs:1")
    assert torch.equal(b.cpu(), torch.arange(10.0))
    a.add_(1)
    assert b.cpu()[0].item() == 0.0  # a real copy


def test_transfer_bytes_are_counted_per_device():
    import torch_tfmbs
    torch_tfmbs.fabric.reset_profile(0)
    torch_tfmbs.fabric.reset_profile(1)
    d = torch.ones(1000).to("tfmbs")
    d.cpu()
    torch.ones(10, dtype=torch.float64).to("tfmbs:1")
    counts = torch_tfmbs.fabric.profile_detailed(0)
    assert counts["bytes_h2d"] == 4000 and counts["bytes_d2h"] == 4000
    assert torch_tfmbs.fabric.profile_detailed(1)["bytes_h2d"] == 80


def test_views_share_memory():
    d = torch.zeros(4, 4, device="tfmbs")
    v = d.view(16)
    v[3] = 7.0
    assert d[0, 3].item() == 7.0
    r = d.reshape(2, 8)
    assert r.data_ptr() == d.data_ptr()
    e = d[1].expand(3, 4)
    assert e.data_ptr() == d[1].data_ptr()
    s = d.as_strided((2, 2), (4, 1), 5)
    s.fill_(1.0)
    assert d.cpu()[1, 1:3].tolist() == [1.0, 1.0]


def test_resize_and_set():
    d = torch.arange(4.0, device="tfmbs")
    d.resize_(10)
    assert d.shape == (10,) and d[:4].cpu().tolist() == [0.0, 1.0, 2.0, 3.0]
    other = torch.empty(0, device="tfmbs")
    other.set_(d)
    assert other.data_ptr() == d.data_ptr()
    third = torch.empty(0, device="tfmbs")
    third.set_(d.untyped_storage(), 1, (3,), (1,))
    assert third.cpu().tolist() == [1.0, 2.0, 3.0]
    fourth = torch.empty(3, device="tfmbs").set_()
    assert fourth.numel() == 0
    storage = torch.empty(0, device="tfmbs").untyped_storage()
    storage.resize_(64)
    assert storage.nbytes() == 64


def test_print_and_item():
    d = torch.tensor([[1.5, -2.0], [0.25, 3.0]], device="tfmbs")
    text = repr(d)
    assert "device='tfmbs:0'" in text and "1.5000" in text
    assert d.sum().item() == 2.75
    assert bool(d[0, 0] > 1)


def test_save_and_load(tmp_path):
    d = torch.arange(5.0, device="tfmbs")
    torch.save(d, tmp_path / "t.pt")
    assert torch.load(tmp_path / "t.pt").device == torch.device("tfmbs:0")
    assert torch.equal(torch.load(tmp_path / "t.pt", map_location="cpu"), torch.arange(5.0))
    assert torch.load(tmp_path / "t.pt", map_location="tfmbs:1").device.index == 1


def test_pin_memory_false_only():
    with pytest.raises(RuntimeError, match="pin_memory"):
        torch.empty(3, device="tfmbs", pin_memory=True)


def test_pin_memory_and_pinned_dataloader():
    t = torch.arange(6.0).pin_memory()
    assert t.is_pinned() and t.device.type == "cpu"
    assert t[2:].is_pinned()
    assert not torch.arange(3.0).is_pinned()
    assert torch.equal(t.to("tfmbs", non_blocking=True).cpu(), torch.arange(6.0))
    data = torch.utils.data.TensorDataset(torch.arange(8.0).view(4, 2))
    for (batch,) in torch.utils.data.DataLoader(data, batch_size=2, pin_memory=True):
        assert batch.is_pinned()


def test_conjugate_and_negative_views_copy_correctly():
    # These once recursed without end (the Conjugate fallback cloned through
    # _copy_from again) and crashed the process.
    x = torch.randn(4, dtype=torch.complex64)
    d = x.to("tfmbs")
    assert torch.equal(d.conj().cpu(), x.conj())
    assert torch.equal(d.conj().imag.neg().cpu(), x.conj().imag.neg())
    back = torch.empty(4, dtype=torch.complex64)
    back.copy_(d.conj())
    assert torch.equal(back, x.conj())
    into = torch.empty(4, dtype=torch.complex64, device="tfmbs")
    into.copy_(x.conj())
    assert torch.equal(into.cpu(), x.conj())
    real = torch.randn(5, 6, 7)
    assert torch.equal(torch.fft.hfft(real.to("tfmbs"), n=10, dim=1).cpu(),
                       torch.fft.hfft(real, n=10, dim=1))
