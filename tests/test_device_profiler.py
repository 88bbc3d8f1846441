"""torch.profiler's device view of tfmbs (csrc/device/DeviceProfiler.cpp):
with ProfilerActivity.PrivateUse1, fabric and host-path kernels are device
events, linked to the torch op that ran them, as CUDA kernels are."""
import json

import pytest
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import torch_tfmbs
from torch_tfmbs.nn import TFMBSLinear

BOTH = [ProfilerActivity.CPU, ProfilerActivity.PrivateUse1]


def run_linear_and_matmul(device="tfmbs:0"):
    torch.manual_seed(0)
    layer = TFMBSLinear(64, 32).to(device).eval()
    x = torch.randn(4, 64, device=device)
    a = torch.randn(48, 48, device=device)
    with torch.no_grad():
        layer(x)
        a @ a
    return layer, x


def device_events(prof):
    return [e for e in prof.events() if e.device_type == DeviceType.PrivateUse1]


def chrome_trace(prof, tmp_path):
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    return json.loads(path.read_text())["traceEvents"]


def test_linear_and_matmul_give_device_events_with_durations():
    run_linear_and_matmul()  # warm: the ternary frame is made resident outside the trace
    with profile(activities=BOTH) as prof:
        run_linear_and_matmul()
    names = [e.name for e in device_events(prof)]
    assert "tfmbs::ternary_linear" in names and "aten::mm" in names
    for e in device_events(prof):
        assert e.device_time > 0 and e.device_index == 0


def test_key_averages_charge_device_time_to_the_ops():
    with profile(activities=BOTH) as prof:
        run_linear_and_matmul()
    cpu_rows = {r.key: r for r in prof.key_averages() if r.cpu_time_total > 0}
    for op in ("tfmbs::ternary_linear", "aten::mm"):
        assert cpu_rows[op].device_time_total > 0
    # The enclosing op's total includes its kernels; its own self time has none.
    assert cpu_rows["aten::matmul"].device_time_total >= cpu_rows["aten::mm"].device_time_total
    assert cpu_rows["aten::matmul"].self_device_time_total == 0
    assert "Self TFMBS" in prof.key_averages().table()


def test_only_cpu_activity_records_no_device_events():
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_linear_and_matmul()
    assert device_events(prof) == []


def test_chrome_trace_has_kernels_on_device_lanes_inside_their_ops(tmp_path):
    layer, x = run_linear_and_matmul()
    before = torch_tfmbs.fabric.profile(0)["utilization"]
    with profile(activities=BOTH) as prof:
        with torch.no_grad():
            layer(x)
    macs = torch_tfmbs.fabric.profile(0)["utilization"] - before
    events = chrome_trace(prof, tmp_path)
    kernels = [e for e in events if e.get("cat") == "kernel"]
    (kernel,) = [e for e in kernels if e["name"] == "tfmbs::ternary_linear"]
    assert kernel["pid"] == 0 and kernel["tid"] == 0 and kernel["dur"] > 0
    # The fabric's model rides along: MACs as the telemetry counted them.
    assert kernel["args"]["MACs"] == macs > 0
    assert kernel["args"]["modeled cycles"] > 0
    assert kernel["args"]["engine"].startswith("fabric")
    # Linked to the CPU op that launched it, and inside its interval.
    (op,) = [e for e in events if e.get("cat") == "cpu_op" and e["name"] == "tfmbs::ternary_linear"]
    assert kernel["args"]["External id"] == op["args"]["External id"]
    assert op["ts"] <= kernel["ts"] and kernel["ts"] + kernel["dur"] <= op["ts"] + op["dur"] + 1
    lanes = [e for e in events if e.get("ph") == "M" and e["name"] == "thread_name" and e["pid"] == 0]
    assert any(e["args"]["name"] == "tfmbs:0 stream 0" for e in lanes)


def test_second_device_gets_its_own_lane(tmp_path):
    run_linear_and_matmul("tfmbs:1")
    with profile(activities=BOTH) as prof:
        run_linear_and_matmul("tfmbs:1")
    assert {e.device_index for e in device_events(prof)} == {1}
    kernels = [e for e in chrome_trace(prof, tmp_path) if e.get("cat") == "kernel"]
    assert kernels and all(e["pid"] == 1 for e in kernels)


def test_backward_kernels_are_recorded():
    layer = TFMBSLinear(64, 32).to("tfmbs")
    x = torch.randn(4, 64, device="tfmbs", requires_grad=True)
    with profile(activities=BOTH) as prof:
        layer(x).sum().backward()
    assert len(device_events(prof)) >= 3
    assert all(e.device_time > 0 for e in device_events(prof))


def test_the_package_profiler_still_works_inside_torch_profiler():
    with profile(activities=BOTH) as prof:
        with torch_tfmbs.profiler() as ours:
            run_linear_and_matmul()
    ops = [r["op"] for r in ours.rows]
    assert "tfmbs::ternary_linear" in ops and "aten::mm" in ops
    assert sorted(e.name for e in device_events(prof)) == sorted(ops)


@pytest.mark.parametrize("repeat", range(2))
def test_sessions_do_not_leak_into_each_other(repeat):
    with profile(activities=BOTH) as first:
        run_linear_and_matmul()
    with profile(activities=BOTH) as second:
        pass
    assert device_events(first) and device_events(second) == []


def test_work_queued_on_a_side_stream_is_on_its_lane_linked_to_its_op(tmp_path):
    layer, x = run_linear_and_matmul()
    s = torch.tfmbs.Stream()
    with profile(activities=BOTH) as prof:
        with torch.no_grad(), torch.tfmbs.stream(s):
            torch.tfmbs._sleep(50)
            layer(x)  # runs on the stream's worker after the sleep
        s.synchronize()
    events = chrome_trace(prof, tmp_path)
    (kernel,) = [e for e in events if e.get("cat") == "kernel" and e["name"] == "tfmbs::ternary_linear"]
    (op,) = [e for e in events if e.get("cat") == "cpu_op" and e["name"] == "tfmbs::ternary_linear"]
    assert kernel["args"]["External id"] == op["args"]["External id"]
    assert kernel["ts"] >= op["ts"] + op["dur"]  # queued: the op returned before the kernel ran
    lanes = {e["tid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e["name"] == "thread_name" and e["pid"] == 0}
    assert lanes[kernel["tid"]] == f"tfmbs:0 stream {s.stream_id}"
