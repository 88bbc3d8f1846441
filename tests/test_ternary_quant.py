"""torch_tfmbs.quant: ternarize() against hand-computed values, and the
PT-5 / T2B pack ops on CPU and tfmbs (bit-exact with the fabric codecs)."""
import pytest
import torch

from torch_tfmbs import quant


# ------------------------------------------------------------- ternarize

def test_absmean_per_tensor_hand_computed():
    w = torch.tensor([[0.9, -0.1, 0.0], [-1.6, 0.3, 0.2]])
    # mean|w| = (0.9+0.1+0+1.6+0.3+0.2)/6 = 3.1/6 = 0.51667
    # w/s = [1.742, -0.194, 0, -3.097, 0.581, 0.387] -> round, clamp
    trits, scale = quant.ternarize(w)
    assert trits.dtype == torch.int8 and scale.dim() == 0
    assert scale.item() == pytest.approx(3.1 / 6, rel=1e-6)
    assert trits.tolist() == [[1, 0, 0], [-1, 1, 0]]


def test_absmean_round_half_to_even():
    # scale = mean(|[1, 0.5, -0.5, 2]|) = 1.0 -> 0.5 rounds to 0, 2 clamps to 1
    trits, scale = quant.ternarize(torch.tensor([1.0, 0.5, -0.5, 2.0]))
    assert scale.item() == 1.0
    assert trits.tolist() == [1, 0, 0, 1]


def test_absmean_per_channel_hand_computed():
    w = torch.tensor([[2.0, -2.0, 0.5, 0.0], [0.1, 0.1, -0.4, 0.0]])
    # row 0: s = 4.5/4 = 1.125 -> [1.78, -1.78, 0.44, 0] -> [1, -1, 0, 0]
    # row 1: s = 0.6/4 = 0.15  -> [0.67, 0.67, -2.67, 0] -> [1, 1, -1, 0]
    trits, scale = quant.ternarize(w, per_channel=True)
    assert scale.shape == (2,)
    assert scale.tolist() == pytest.approx([1.125, 0.15], rel=1e-6)
    assert trits.tolist() == [[1, -1, 0, 0], [1, 1, -1, 0]]


def test_sign_method():
    w = torch.tensor([[0.01, -3.0], [0.0, 0.5]])
    trits, scale = quant.ternarize(w, method="sign")
    assert trits.tolist() == [[1, -1], [0, 1]]
    assert scale.item() == pytest.approx(3.51 / 4, rel=1e-6)


def test_threshold_method_given_delta_and_default():
    w = torch.tensor([0.05, -0.2, 0.3, -0.01, 0.8])
    trits, scale = quant.ternarize(w, method="threshold", delta=0.1)
    assert trits.tolist() == [0, -1, 1, 0, 1]
    assert scale.item() == pytest.approx((0.2 + 0.3 + 0.8) / 3, rel=1e-6)
    # default delta = 0.7 * mean|w| = 0.7 * 1.36/5 = 0.1904
    trits, _ = quant.ternarize(w, method="threshold")
    assert trits.tolist() == [0, -1, 1, 0, 1]
    trits, scale = quant.ternarize(torch.tensor([[0.5, 0.05], [0.01, 0.02]]), method="threshold",
                                   delta=0.1, per_channel=True)
    assert trits.tolist() == [[1, 0], [0, 0]]
    # row 1 keeps nothing: its scale falls back to its mean|w|
    assert scale.tolist() == pytest.approx([0.5, 0.015], rel=1e-6)


def test_all_zero_weight_has_a_positive_scale():
    trits, scale = quant.ternarize(torch.zeros(3, 4))
    assert trits.abs().sum() == 0 and scale.item() == pytest.approx(1e-5)


def test_ternarize_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        quant.ternarize(torch.randn(3), method="nope")
    with pytest.raises(ValueError, match="floating"):
        quant.ternarize(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="delta"):
        quant.ternarize(torch.randn(3), method="absmean", delta=0.1)


def test_ternarize_on_tfmbs_equals_cpu():
    w = torch.randn(33, 47)
    for method in quant.METHODS:
        for pc in (False, True):
            t, s = quant.ternarize(w, method, pc)
            td, sd = quant.ternarize(w.to("tfmbs"), method, pc)
            assert td.device.type == "tfmbs"
            assert torch.equal(t, td.cpu()) and torch.equal(s, sd.cpu())


# ----------------------------------------------------------------- packing

def pt5_reference(trits):
    """PT-5 by hand: byte = sum_i (t_i + 1) * 3^i over groups of 5, zero-padded."""
    t = [int(v) for v in trits] + [0] * (-len(trits) % 5)
    return [sum((t[j + i] + 1) * 3 ** i for i in range(5)) for j in range(0, len(t), 5)]


def test_pt5_hand_computed():
    # [1,-1,0,1,0] -> 2 + 0*3 + 1*9 + 2*27 + 1*81 = 146; [-1] padded -> 0 + 1*(3+9+27+81) = 120
    trits = torch.tensor([1, -1, 0, 1, 0, -1], dtype=torch.int8)
    assert quant.pack_pt5(trits).tolist() == [146, 120]
    assert pt5_reference(trits.tolist()) == [146, 120]


def test_t2b_is_seed003_layout():
    # seed 003's example: [1,-1,0,1, 0,-1,1,1] -> 2 bytes; codes trit+1, low bits first
    w = torch.tensor([1, -1, 0, 1, 0, -1, 1, 1], dtype=torch.int8)
    packed = quant.pack_ternary(w)
    assert packed.dtype == torch.uint8 and packed.tolist() == [0x92, 0xA1]
    assert torch.equal(quant.unpack_ternary(packed, len(w)), w)


@pytest.mark.parametrize("device", ["cpu", "tfmbs"])
@pytest.mark.parametrize("packing", ["pt5", "t2b"])
@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 59, 60, 61, 1003])
def test_round_trip(device, packing, n):
    g = torch.Generator().manual_seed(n)
    trits = torch.randint(-1, 2, (n,), generator=g, dtype=torch.int8).to(device)
    packed = quant.pack(trits, packing)
    assert packed.device == trits.device and packed.dtype == torch.uint8
    assert packed.numel() == quant.packed_size(n, packing)
    if packing == "pt5":
        assert packed.cpu().tolist() == pt5_reference(trits.cpu().tolist())
    out = quant.unpack(packed, n, packing)
    assert out.device == trits.device and out.dtype == torch.int8
    assert torch.equal(out.cpu(), trits.cpu())


def test_pack_takes_any_shape_and_real_dtype():
    t = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    assert torch.equal(quant.pack_pt5(t), quant.pack_pt5(t.to(torch.int8).reshape(-1)))
    assert torch.equal(quant.pack_pt5(t.t()), quant.pack_pt5(t.t().contiguous()))


@pytest.mark.parametrize("device", ["cpu", "tfmbs"])
def test_pack_rejects_non_ternary(device):
    for bad, shown in [(torch.tensor([1, 0, 2], dtype=torch.int8), "(index|element) 2 is 2"),
                       (torch.tensor([0.0, 0.5]), "element 1 is 0.5"),
                       (torch.tensor([0.0, float("nan")]), "element 1")]:
        with pytest.raises(ValueError, match=shown):
            quant.pack_pt5(bad.to(device))
        with pytest.raises(ValueError, match="-1, 0"):
            quant.pack_t2b(bad.to(device))


@pytest.mark.parametrize("device", ["cpu", "tfmbs"])
def test_unpack_rejects_invalid_bytes_and_wrong_lengths(device):
    good = quant.pack_pt5(torch.ones(10, dtype=torch.int8)).to(device)
    bad = good.clone()
    bad[1] = 250
    with pytest.raises(ValueError, match="250"):
        quant.unpack_pt5(bad, 10)
    with pytest.raises(ValueError, match="3 bytes, got 2|has 3 bytes"):
        quant.unpack_pt5(good, 11)
    with pytest.raises(ValueError, match="uint8"):
        quant.unpack_pt5(good.to(torch.int8), 10)
    t2b = quant.pack_t2b(torch.zeros(4, dtype=torch.int8)).to(device)
    t2b.fill_(0xFF)
    with pytest.raises(ValueError, match="code"):
        quant.unpack_t2b(t2b, 4)
    # nothing lost: the good tensor still decodes
    assert quant.unpack_pt5(good, 10).cpu().tolist() == [1] * 10


def test_pack_meta_shapes():
    t = torch.empty(7, 9, device="meta", dtype=torch.int8)
    assert quant.pack_pt5(t).shape == (13,) and quant.pack_t2b(t).shape == (16,)
    assert quant.unpack_pt5(torch.empty(13, dtype=torch.uint8, device="meta"), 63).shape == (63,)


def test_quantize_activations_hand_computed():
    x = torch.tensor([[0.5, -1.0, 0.25, 0.0]])
    q, s = quant.quantize_activations(x, "int8")
    # 127 / 1.0: [63.5 -> 64 (even), -127, 31.75 -> 32, 0]
    assert q.tolist() == [[64, -127, 32, 0]]
    assert s.item() == pytest.approx(1 / 127)
    q, s = quant.quantize_activations(x, "ternary")
    assert q.tolist() == [[1, -1, 1, 0]] and s.item() == pytest.approx(1.75 / 4)
