"""torch.autocast on tfmbs follows the accelerator policies: matmuls and
convolutions in the chosen lower precision, fp32 ops kept in fp32."""
import pytest
import torch
import torch.nn.functional as F


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_runs_in_lower_precision_like_cpu(dtype):
    torch.manual_seed(0)
    m = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=dtype):
        ref = m(x)
    dm, dx = m.to("tfmbs"), x.to("tfmbs")
    with torch.autocast("tfmbs", dtype=dtype):
        out = dm(dx)
        assert torch.is_autocast_enabled("tfmbs")
    assert out.dtype == ref.dtype == dtype
    assert torch.equal(out.cpu(), ref)
    assert dm(dx).dtype == torch.float32  # outside the region


def test_fp32_policy_and_pass_through():
    x = torch.randn(4, 5, device="tfmbs")
    with torch.autocast("tfmbs", dtype=torch.bfloat16):
        low = x @ x.T
        assert low.dtype == torch.bfloat16
        assert F.layer_norm(low, (4,)).dtype == torch.float32  # fp32 policy
        assert torch.softmax(low, -1).dtype == torch.float32
        assert (low + 1).dtype == torch.bfloat16  # not listed: passes through
    assert torch.tfmbs.get_amp_supported_dtype() == [torch.float16, torch.bfloat16]
