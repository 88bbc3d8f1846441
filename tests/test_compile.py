"""torch.compile with the default backend (inductor) on tfmbs: inductor's
generated C++ kernels run over device memory, buffers are allocated on the
device, fabric ops stay extern kernels; results equal eager within 1e-5."""
import os
import subprocess
import sys

import pytest
import torch
from torch._inductor.utils import run_and_get_code

import torch_tfmbs
import model_zoo


@pytest.fixture(autouse=True)
def fresh_inductor_cache(tmp_path_factory, monkeypatch):
    # A compiled graph cached by an earlier run would hide a broken backend.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))


def close(got, want):
    assert got.device.type == "tfmbs"
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=1e-5, atol=1e-5)


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32),
                               torch.nn.Linear(32, 4))


def test_mlp_runs_generated_cpp_kernels_on_device_memory():
    torch_tfmbs.reset_fallback_stats()
    model = mlp().to("tfmbs")
    x = torch.randn(8, 16).to("tfmbs")
    compiled = torch.compile(model, fullgraph=True)
    out, code = run_and_get_code(compiled, x)
    close(out, model(x))
    source = "\n".join(code)
    assert "cpp_fused" in source  # a generated C++ kernel ...
    assert "device='tfmbs" in source  # ... writing buffers allocated on the device
    assert torch_tfmbs.fallback_stats() == {}


def test_second_device_keeps_its_index():
    assert torch.tfmbs.device_count() == 2  # tests/conftest.py sets TFMBS_NUM_FABRICS=2
    model = mlp().to("tfmbs:1")
    x = torch.randn(8, 16).to("tfmbs:1")
    out = torch.compile(model)(x)
    assert out.device == torch.device("tfmbs:1")
    close(out, model(x))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_transformers_inference_and_a_second_length(name):
    model, _ = model_zoo.make(name)
    model.to("tfmbs").eval()
    compiled = torch.compile(model)
    for length in (12, 7):  # the second length recompiles (or reuses a dynamic graph) as on CPU
        ids = torch.randint(0, 97, (2, length), generator=torch.Generator().manual_seed(length))
        ids = ids.to("tfmbs")
        with torch.no_grad():
            close(compiled(input_ids=ids).logits, model(input_ids=ids).logits)


def test_training_step_with_adamw_equals_eager():
    def run(compile_model):
        model = mlp().to("tfmbs")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        forward = torch.compile(model) if compile_model else model
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(3)).to("tfmbs")
        target = torch.randn(8, 4, generator=torch.Generator().manual_seed(4)).to("tfmbs")
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(forward(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return losses, list(model.parameters())

    compiled_losses, compiled_params = run(True)
    eager_losses, eager_params = run(False)
    for got, want in zip(compiled_losses + compiled_params, eager_losses + eager_params):
        close(got.detach(), want.detach())


def test_converted_ternary_model_keeps_the_fabric_op_in_one_graph():
    model, _ = torch_tfmbs.convert(mlp().to("tfmbs"))
    model.eval()
    x = torch.randn(8, 16).to("tfmbs")
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: no graph break at the fabric op
    with torch.no_grad():
        out, code = run_and_get_code(compiled, x)
        close(out, model(x))
    assert "torch.ops.tfmbs" in "\n".join(code)  # an extern kernel in the wrapper


def test_max_autotune_runs():
    model = mlp().to("tfmbs")
    x = torch.randn(8, 16).to("tfmbs")
    close(torch.compile(model, mode="max-autotune-no-cudagraphs")(x), model(x))


def test_cpp_wrapper_is_a_clear_error():
    model = mlp().to("tfmbs")
    x = torch.randn(8, 16).to("tfmbs")
    with pytest.raises(Exception, match="Python wrapper only"):
        torch.compile(model, options={"cpp_wrapper": True})(x)


def test_the_compile_cache_works_across_processes(tmp_path):
    script = """
import torch, torch_tfmbs
from torch._dynamo.utils import counters
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
torch.compile(model.to("tfmbs"))(torch.ones(8, 16).to("tfmbs"))
print("hits", counters["inductor"]["fxgraph_cache_hit"])
"""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "hits 0" in runs[0].stdout
    assert "hits 1" in runs[1].stdout


def test_exported_llama_runs_on_tfmbs():
    model, _ = model_zoo.make("llama")
    model.to("tfmbs").eval()
    model.config.use_cache = False  # the KV cache object is not a pytree export can return
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(5)).to("tfmbs")
    program = torch.export.export(model, (), {"input_ids": ids})
    with torch.no_grad():
        close(program.module()(input_ids=ids).logits, model(input_ids=ids).logits)


def test_inductor_loaded_before_the_backend_still_finds_it(tmp_path):
    # With autoload off, inductor may register its devices before tfmbs
    # exists; importing the package then registers tfmbs with it directly.
    script = """
import torch, torch._inductor.codegen.common as common
common.init_backend_registration()
import torch_tfmbs
x = torch.arange(6.0).to("tfmbs")
out = torch.compile(lambda t: (t * 2).sin())(x)
assert out.device.type == "tfmbs", out.device
torch.testing.assert_close(out.cpu(), (torch.arange(6.0) * 2).sin())
print("ok")
"""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path), TORCH_DEVICE_BACKEND_AUTOLOAD="0")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr
