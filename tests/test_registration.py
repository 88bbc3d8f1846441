import torch

from conftest import run_python


def test_device_name_and_module():
    assert torch._C._get_privateuse1_backend_name() == "tfmbs"
    assert torch.tfmbs.is_available()
    assert torch.tfmbs.device_count() == 2
    t = torch.ones(3, device="tfmbs")
    assert t.device == torch.device("tfmbs:0")
    assert t.is_tfmbs
    assert torch.ones(2).tfmbs().is_tfmbs
    assert torch.ones(2).tfmbs(1).device == torch.device("tfmbs:1")


def test_current_device_and_context():
    assert torch.tfmbs.current_device() == 0
    with torch.tfmbs.device(1):
        assert torch.tfmbs.current_device() == 1
        assert torch.empty(2, device="tfmbs").device.index == 1
    assert torch.tfmbs.current_device() == 0
    torch.tfmbs.set_device("tfmbs:1")
    try:
        assert torch.tfmbs.current_device() == 1
    finally:
        torch.tfmbs.set_device(0)


def test_accelerator_api():
    assert torch.accelerator.current_accelerator() == torch.device("tfmbs")
    assert torch.accelerator.device_count() == 2
    torch.accelerator.set_device_index(1)
    assert torch.accelerator.current_device_index() == 1
    torch.accelerator.set_device_index(0)
    torch.accelerator.synchronize()
    torch.tfmbs.synchronize()
    assert torch.accelerator.current_stream().device == torch.device("tfmbs:0")


def test_bad_device_index_is_a_clear_error():
    keep = torch.arange(5.0, device="tfmbs")
    for bad in (lambda: torch.empty(2, device="tfmbs:5"),
                lambda: torch.ones(2).to("tfmbs:2"),
                lambda: torch.tfmbs.set_device(7)):
        try:
            bad()
            raise AssertionError("expected an IndexError")
        except IndexError as e:
            assert "invalid device index" in str(e) and "2 tfmbs devices" in str(e), str(e)
    assert keep.cpu().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert torch.tfmbs.current_device() == 0


def test_module_to_keeps_parameter_identity():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    params = list(model.parameters())
    model.to("tfmbs")
    assert [p is q for p, q in zip(params, model.parameters())] == [True] * len(params)
    assert all(p.device.type == "tfmbs" for p in model.parameters())
    assert all(b.device.type == "tfmbs" for b in model.buffers())
    model.tfmbs(1)
    assert params[0].device == torch.device("tfmbs:1")


def test_autoload_from_plain_import_torch():
    r = run_python("import torch; print(torch.ones(2, device='tfmbs').device)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "tfmbs:0"


def test_autoload_can_be_disabled():
    r = run_python("import torch; torch.ones(2, device='tfmbs')",
                   env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    assert r.returncode != 0
    assert "tfmbs" in r.stderr


def test_events_measure_time():
    start = torch.Event(device="tfmbs", enable_timing=True)
    end = torch.Event(device="tfmbs", enable_timing=True)
    start.record()
    torch.ones(1000, device="tfmbs").sum()
    end.record()
    end.synchronize()
    assert start.elapsed_time(end) >= 0.0
