"""The fabric telemetry API against counters computed by hand (the cycle
model of csrc/fabric/telemetry.h, written out independently here)."""
import math

import pytest
import torch

import torch_tfmbs
from torch_tfmbs import fabric

TILES, LANES = 4, 15


def hand_counters(w, x, act_bytes_per_row):
    """Counters of a TGEMM by the cycle model, element by element."""
    rows, cols = w.shape
    group = TILES * LANES
    passes = math.ceil(rows / group)
    burst = math.ceil(act_bytes_per_row / 8)
    n = x.shape[0]
    skips = [[0] * LANES for _ in range(TILES)]
    active = [[0] * LANES for _ in range(TILES)]
    macs = 0
    for r in range(rows):
        tile, lane = (r % group) // LANES, r % LANES
        for b in range(n):
            for d in range(cols):
                active[tile][lane] += 1
                if w[r, d] == 0 or x[b, d] == 0:
                    skips[tile][lane] += 1
                else:
                    macs += 1
    return {"cycles": passes * n * (cols + burst), "burst": passes * n * burst,
            "utilization": macs, "skips": skips, "active": active}


@pytest.fixture
def fresh():
    fabric.reset_profile()
    yield
    fabric.reset_profile()


def test_small_gemv_by_hand(fresh):
    w = torch.tensor([[1, 0, -1], [0, 1, 1]], dtype=torch.int8)
    x = torch.tensor([[5, 0, -2]], dtype=torch.int8).to("tfmbs")
    y = fabric.tgemm(w, x)
    assert y.device.type == "tfmbs" and y.dtype == torch.int32
    assert y.cpu().tolist() == [[7, -2]]
    p = fabric.profile()
    # 1 pass, burst ceil(3/8) = 1 cycle, then 3 compute cycles.
    assert p["cycles"] == 4
    # lane 0: w=0 at d=1 -> 1 skip, 2 MACs; lane 1: w=0 at d=0, x=0 at d=1 -> 2 skips.
    assert p["skips"] == [1, 2] + [0] * 13
    assert p["utilization"] == 3
    d = fabric.profile_detailed()
    assert d["active_cycles"] == [3, 3] + [0] * 13
    assert d["burst_wait_cycles"] == 1
    assert d["zero_skip_ratio"] == pytest.approx(3 / 6)
    assert d["lane_utilization"] == pytest.approx(3 / (4 * 4 * 15))
    assert d["overflow_flags"] == [False] * 4
    assert fabric.profile_tile(0)["skips"] == [1, 2] + [0] * 13
    assert fabric.profile_tile(1)["active_cycles"] == [0] * 15


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_multi_pass_gemm_matches_the_cycle_model(fresh, engine):
    g = torch.Generator().manual_seed(7)
    w = torch.randint(-1, 2, (61, 10), generator=g, dtype=torch.int8)  # 2 passes
    w[:, 3] = 0
    x = torch.randint(-128, 128, (2, 10), generator=g, dtype=torch.int8)
    x[1, 4] = 0
    y = fabric.tgemm(w, x.to("tfmbs"), engine=engine)
    assert torch.equal(y.cpu(), (x.int() @ w.int().T))
    want = hand_counters(w, x, act_bytes_per_row=10)
    d = fabric.profile_detailed()
    assert d["cycles"] == want["cycles"] == 2 * 2 * (10 + 2)
    assert d["burst_wait_cycles"] == want["burst"]
    assert d["utilization"] == want["utilization"]
    for t in range(TILES):
        tile = fabric.profile_tile(t)
        assert tile["skips"] == want["skips"][t]
        assert tile["active_cycles"] == want["active"][t]
    assert d["skips"] == [sum(want["skips"][t][lane] for t in range(TILES)) for lane in range(15)]


def test_engines_agree_and_counters_accumulate(fresh):
    g = torch.Generator().manual_seed(1)
    w = torch.randint(-1, 2, (37, 23), generator=g, dtype=torch.int8)
    x = torch.randn(3, 23, generator=g).to("tfmbs")
    ref = fabric.tgemm(w, x, "fp32", "reference")
    one = fabric.profile_detailed()
    fast = fabric.tgemm(w, x, "fp32", "fast")
    assert torch.equal(ref.cpu(), fast.cpu())
    two = fabric.profile_detailed()
    assert two["cycles"] == 2 * one["cycles"] and two["utilization"] == 2 * one["utilization"]
    assert two["fabric_ops"] == 2
    assert torch.allclose(fast.cpu(), x.cpu() @ w.float().T, atol=1e-5)


def test_profiler_table_lists_fabric_and_host_ops(fresh):
    w = torch.randint(-1, 2, (8, 16), dtype=torch.int8)
    x = torch.randint(-5, 6, (4, 16), dtype=torch.int8).to("tfmbs")
    with torch_tfmbs.profiler() as prof:
        y = fabric.tgemm(w, x)
        (y + 1).sum()
    ops = [row["op"] for row in prof.rows]
    assert "tfmbs::fabric_tgemm" in ops and "aten::add.Tensor" in ops
    gemm = next(r for r in prof.rows if r["op"] == "tfmbs::fabric_tgemm")
    assert gemm["engine"] == "fabric-fast" and gemm["cycles"] == fabric.profile()["cycles"]
    assert gemm["shapes"] == "[4, 16], [8, 16]"
    table = prof.table()
    assert "tfmbs::fabric_tgemm" in table and "host" in table


def test_profiler_rows_split_fabric_ops_into_engine_and_host_time(fresh):
    # A fabric op's row says how much of its wall time the engine ran; host
    # ops have no engine part. Both fabric ops: the per-call tgemm and a
    # resident layer's ternary_linear.
    from torch_tfmbs.nn import TFMBSLinear
    layer = TFMBSLinear(64, 32).eval().to("tfmbs")
    w = torch.randint(-1, 2, (8, 16), dtype=torch.int8)
    x = torch.randint(-5, 6, (4, 16), dtype=torch.int8).to("tfmbs")
    with torch.no_grad(), torch_tfmbs.profiler() as prof:
        fabric.tgemm(w, x) + 1
        layer(torch.randn(3, 64).to("tfmbs"))
    rows = {r["op"]: r for r in prof.rows}
    for op in ("tfmbs::fabric_tgemm", "tfmbs::ternary_linear"):
        assert 0 < rows[op]["engine_ns"] <= rows[op]["wall_ns"], rows[op]
    assert rows["aten::add.Tensor"]["engine_ns"] == 0
    sums = {g["op"]: g for g in prof.key_averages()}
    assert sums["tfmbs::ternary_linear"]["engine_ns"] == rows["tfmbs::ternary_linear"]["engine_ns"]
    assert "engine ms" in prof.table()


def test_bad_input_is_a_clear_error(fresh):
    x = torch.ones(2, 4, dtype=torch.int8, device="tfmbs")
    with pytest.raises(RuntimeError, match=r"input must be \[N, 3\]"):
        fabric.tgemm(torch.zeros(2, 3, dtype=torch.int8), x)
    with pytest.raises(ValueError, match="row 1, column 2"):
        w = torch.zeros(2, 4, dtype=torch.int8)
        w[1, 2] = 3
        fabric.tgemm(w, x)
    with pytest.raises(RuntimeError, match="engine must be"):
        fabric.tgemm(torch.zeros(2, 4, dtype=torch.int8), x, engine="warp")
    with pytest.raises(IndexError, match="tile 9"):
        fabric.profile_tile(9)
    assert x.cpu().sum().item() == 8


def test_config_reports_the_model():
    c = fabric.config()
    assert (c["tiles"], c["lanes_per_tile"], c["clock_mhz"], c["num_fabrics"]) == (4, 15, 250, 2)
    assert c["pool_bytes"] == 1 << 30
    assert c["engine_isa"] in ("scalar", "avx2", "avx512", "amx")
    assert c["thread_pool"] == "shared"


def test_the_engines_own_threads_compute_the_same():
    from conftest import run_python
    code = ("import torch, torch_tfmbs\n"
            "from torch_tfmbs.nn import TFMBSLinear\n"
            "torch.manual_seed(0)\n"
            "m = TFMBSLinear(512, 256).eval()\n"
            "x = torch.randn(16, 512)\n"
            "with torch.no_grad():\n"
            "    cpu = m(x)\n"
            "    dev = m.to('tfmbs')(x.to('tfmbs')).cpu()\n"
            "print(torch_tfmbs.fabric.config()['thread_pool'], torch.equal(cpu, dev))")
    for pool in ("own", "shared"):
        r = run_python(code, env={"TFMBS_THREAD_POOL": pool})
        assert r.returncode == 0, r.stderr[-1500:]
        assert r.stdout.split()[-2:] == [pool, "True"]


@pytest.mark.parametrize("var,value,allowed", [("TFMBS_TILES", "0", "1..64"),
                                               ("TFMBS_CLOCK_MHZ", "fast", "1..10000"),
                                               ("TFMBS_NUM_FABRICS", "17", "1..16"),
                                               ("TFMBS_THREAD_POOL", "omp", "shared, own")])
def test_bad_fabric_config_is_rejected(var, value, allowed):
    from conftest import run_python
    # Importing warns (CPU-only scripts keep working); using the device raises.
    r = run_python("import torch, torch_tfmbs\n"
                   "try:\n    torch.ones(1, device='tfmbs')\nexcept ValueError as e:\n    print(e)",
                   env={var: value})
    assert r.returncode == 0, r.stderr
    for text in (r.stderr, r.stdout):
        assert var in text and value in text and allowed in text, text[-1500:]
