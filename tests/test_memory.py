import gc

import pytest
import torch

import torch_tfmbs
import torch_tfmbs.memory

from conftest import run_python

MiB = 1 << 20


def test_allocated_grows_by_exactly_the_request(clean_memory):
    base = torch.tfmbs.memory_allocated()
    t = torch.empty(256, device="tfmbs")  # 1024 bytes, a multiple of 64
    assert torch.tfmbs.memory_allocated() == base + 1024
    stats = torch.tfmbs.memory_stats()
    assert stats["requested_bytes.all.current"] >= 1024
    assert stats["active_bytes.all.current"] == torch.tfmbs.memory_allocated()
    assert torch.accelerator.memory_allocated() == torch.tfmbs.memory_allocated()
    odd = torch.empty(3, dtype=torch.uint8, device="tfmbs")  # rounded to 64
    assert torch.tfmbs.memory_allocated() == base + 1024 + 64
    del t, odd
    assert torch.tfmbs.memory_allocated() == base


def test_peak_and_reset(clean_memory):
    torch.tfmbs.reset_peak_memory_stats()
    base = torch.tfmbs.memory_allocated()
    t = torch.empty(4 * MiB, dtype=torch.uint8, device="tfmbs")
    del t
    assert torch.tfmbs.max_memory_allocated() >= base + 4 * MiB
    torch.tfmbs.reset_peak_memory_stats()
    assert torch.tfmbs.max_memory_allocated() == torch.tfmbs.memory_allocated() == base


def test_memory_stats_has_cuda_key_names():
    stats = torch.tfmbs.memory_stats()
    for key in ("allocated_bytes.all.current", "allocated_bytes.small_pool.peak",
                "reserved_bytes.all.peak", "reserved_bytes.large_pool.current",
                "active.all.current", "segment.all.current", "inactive_split_bytes.all.current",
                "num_ooms", "num_alloc_retries", "num_device_alloc", "num_device_free"):
        assert key in stats, key


def test_reserved_cache_and_empty_cache(clean_memory):
    reserved = torch.tfmbs.memory_reserved()
    t = torch.empty(8 * MiB, dtype=torch.uint8, device="tfmbs")
    assert torch.tfmbs.memory_reserved() == reserved + 8 * MiB
    del t
    assert torch.tfmbs.memory_reserved() == reserved + 8 * MiB  # cached
    free_before, total = torch.tfmbs.mem_get_info()
    torch.tfmbs.empty_cache()
    assert torch.tfmbs.memory_reserved() == reserved
    free_after, total_after = torch.tfmbs.mem_get_info()
    assert total == total_after == 1 << 30
    assert free_after == free_before + 8 * MiB


def test_stats_are_per_device(clean_memory):
    before0 = torch.tfmbs.memory_allocated(0)
    before1 = torch.tfmbs.memory_allocated("tfmbs:1")
    t = torch.empty(MiB, dtype=torch.uint8, device="tfmbs:1")
    assert torch.tfmbs.memory_allocated(1) == before1 + MiB
    assert torch.tfmbs.memory_allocated(0) == before0
    del t


def test_memory_summary_is_a_table():
    keep = torch.empty(1000, device="tfmbs")
    text = torch.tfmbs.memory_summary()
    assert "tfmbs memory summary, device tfmbs:0" in text
    for row in ("Allocated memory", "Reserved memory", "from large pool", "Allocations", "OOMs"):
        assert row in text
    assert "from large pool" not in torch.tfmbs.memory_summary(abbreviated=True)
    del keep


def torch_cuda_summary(monkeypatch, stats):
    """torch.cuda.memory_summary's table for `stats`: torch's own formatter,
    given the tfmbs numbers (it reads them through torch.cuda.memory_stats)."""
    monkeypatch.setattr(torch.cuda.memory, "memory_stats", lambda device=None: stats)
    return torch.cuda.memory.memory_summary(0)


def summary_states():
    """memory_summary() of device 1 with nothing live there, then with large,
    small and freed blocks (sizes in B, KiB and MiB), full and abbreviated."""
    torch.tfmbs.empty_cache()
    assert torch.tfmbs.memory_allocated(1) == 0
    yield torch.tfmbs.memory_summary(1)
    big = [torch.empty(5 * MiB, dtype=torch.uint8, device="tfmbs:1") for _ in range(3)]
    small = [torch.ones(i + 1, device="tfmbs:1") for i in range(200)]
    del big[0]
    yield torch.tfmbs.memory_summary(1)
    yield torch.tfmbs.memory_summary(1, abbreviated=True)
    model = converted_mlp("tfmbs:1")
    yield torch.tfmbs.memory_summary(1)  # with resident frames
    del big, small, model


def converted_mlp(device):
    """A converted 64 -> 32 -> 16 MLP whose frames are resident on `device`."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    model, _ = torch_tfmbs.convert(mlp, device=device)
    with torch.no_grad():
        model(torch.randn(2, 64, device=device))
    return model


def test_memory_summary_shows_resident_frames_by_layer(clean_memory):
    gc.collect()  # earlier tests' layers
    model = converted_mlp("tfmbs:1")
    by_hand = torch_tfmbs.TFMBSLinear(48, 24).to("tfmbs:1").eval()
    with torch.no_grad():
        by_hand(torch.randn(1, 48, device="tfmbs:1"))
    lines = torch.tfmbs.memory_summary(1).splitlines()
    start = next(i for i, line in enumerate(lines) if "Resident frames, by layer" in line)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start + 1:-1]]
    # Named by convert() (their paths), else by class and sizes; then the
    # weight's shape and the frame's size.
    for expected in (["0", "32x64"], ["2", "16x32"], ["TFMBSLinear(48, 24)", "24x48"]):
        assert expected in [r[:2] for r in rows]
    assert all(r[2].endswith("B") for r in rows)
    assert len(rows) == len(torch_tfmbs._C.resident_frames(1))
    del model, by_hand
    gc.collect()
    names = [r.split("|")[1].strip() for r in torch.tfmbs.memory_summary(1).splitlines()]
    assert "0" not in names and "TFMBSLinear(48, 24)" not in names


def test_memory_summary_lines_have_one_width(monkeypatch, clean_memory):
    width = {len(line) for line in torch_cuda_summary(monkeypatch, torch.tfmbs.memory_stats(1))
             .splitlines()}
    assert len(width) == 1
    for text in summary_states():
        lines = text.splitlines()
        assert {len(line) for line in lines} == width, "\n".join(
            f"{len(line)}: {line}" for line in lines)
        assert all(line[0] == line[-1] == "|" for line in lines)


def test_memory_summary_rows_are_torch_cuda_s(monkeypatch, clean_memory):
    """From the column header to the oversize rows, the table is torch's for the
    same numbers, but for the labels naming a GPU."""
    cuda_labels = {"GPU reserved memory  ": "Reserved memory      ",
                   "GPU reserved segments": "Reserved segments    ",
                   "Oversize GPU segments": "Oversize segments    "}
    keep = [torch.empty(3 * MiB + 7, dtype=torch.uint8, device="tfmbs:1"),
            torch.ones(100, device="tfmbs:1")]
    for abbreviated in (False, True):
        stats = torch.tfmbs.memory_stats(1)
        ours = torch.tfmbs.memory_summary(1, abbreviated=abbreviated).splitlines()
        monkeypatch.setattr(torch.cuda.memory, "memory_stats", lambda device=None: stats)
        theirs = torch.cuda.memory.memory_summary(0, abbreviated=abbreviated).splitlines()
        start = theirs.index(next(line for line in theirs if "Metric" in line))
        expected = []
        for line in theirs[start:-1]:
            for cuda, tfmbs in cuda_labels.items():
                line = line.replace(cuda, tfmbs)
            expected.append(line)
        assert ours[start:start + len(expected)] == expected
        assert "KiB" in ours[start + 2]  # the live blocks, in the unit torch picks
    del keep


def test_out_of_memory_names_the_numbers_and_keeps_data(clean_memory):
    keep = torch.arange(1000.0, device="tfmbs")
    big = torch.empty(600 * MiB, dtype=torch.uint8, device="tfmbs")
    ooms = torch.tfmbs.memory_stats()["num_ooms"]
    retries = torch.tfmbs.memory_stats()["num_alloc_retries"]
    with pytest.raises(torch.OutOfMemoryError) as info:
        torch.empty(600 * MiB, dtype=torch.uint8, device="tfmbs")
    msg = str(info.value)
    assert "tfmbs:0" in msg and "600.00 MiB" in msg and "capacity 1.00 GiB" in msg
    assert "allocated" in msg and "cached" in msg
    stats = torch.tfmbs.memory_stats()
    assert stats["num_ooms"] == ooms + 1
    assert stats["num_alloc_retries"] == retries + 1  # the cache was flushed first
    assert torch.equal(keep.cpu(), torch.arange(1000.0))
    del big
    again = torch.empty(600 * MiB, dtype=torch.uint8, device="tfmbs")  # works after a free
    assert again.numel() == 600 * MiB
    del again
    assert torch.equal(keep.cpu(), torch.arange(1000.0))


def test_out_of_memory_in_a_fallback_op_keeps_data(clean_memory):
    a = torch.ones(100 * MiB // 4, device="tfmbs")  # 100 MiB
    hog = torch.empty(900 * MiB, dtype=torch.uint8, device="tfmbs")
    with pytest.raises(torch.OutOfMemoryError):
        a * 2  # the result (100 MiB) does not fit
    assert a[:10].cpu().tolist() == [1.0] * 10
    del hog
    assert (a * 2)[:3].cpu().tolist() == [2.0] * 3


USE_DEVICE = ("import warnings\n"
              "with warnings.catch_warnings(record=True) as w:\n"
              "    warnings.simplefilter('always')\n"
              "    import torch, torch_tfmbs\n"
              "print('warned', any('TFMBS_' in str(x.message) for x in w))\n"
              "print('cpu ok', torch.ones(2).add(1).tolist())\n"
              "try:\n"
              "    torch.ones(2, device='tfmbs')\n"
              "except ValueError as e:\n"
              "    print('use raised', e)\n")


@pytest.mark.parametrize("value", ["lots", "0", "-5GiB", "1000000TiB", "12XB", "1B", "1MiB"])
def test_bad_tfmbs_memory_warns_at_import_and_raises_at_use(value):
    # import torch (which autoloads the backend) must keep working for CPU
    # code; the device itself raises the error naming the variable.
    r = run_python(USE_DEVICE, env={"TFMBS_MEMORY": value})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "warned True" and lines[1] == "cpu ok [2.0, 2.0]", r.stdout
    assert lines[2].startswith("use raised") and "TFMBS_MEMORY" in lines[2] and value in lines[2]


def test_tfmbs_memory_is_whole_segments_and_config_says_so():
    r = run_python("import torch, torch_tfmbs\n"
                   "print(torch_tfmbs.fabric.config()['pool_bytes'], torch_tfmbs._C.pool_info(0)['capacity'])",
                   env={"TFMBS_MEMORY": "3MiB"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(4 << 20)] * 2


def test_pool_is_reserved_lazily():
    r = run_python("import torch_tfmbs, torch; from torch_tfmbs import _C\n"
                   "print(_C.pool_info(0)['reserved'], end=' ')\n"
                   "torch.ones(1, device='tfmbs'); print(_C.pool_info(0)['reserved'])",
                   env={"TFMBS_MEMORY": "8GiB"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False True"


def test_memory_is_a_submodule_as_torch_cuda_memory():
    assert torch.tfmbs.memory is torch_tfmbs.memory
    x = torch.empty(1024, device="tfmbs")
    assert torch.tfmbs.memory.memory_allocated() == torch.tfmbs.memory_allocated() > 0
    del x
