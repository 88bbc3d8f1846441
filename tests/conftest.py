import os

# Two devices with small pools, set before torch (and, through the
# torch.backends entry point, torch_tfmbs) is imported.
os.environ.setdefault("TFMBS_NUM_FABRICS", "2")
os.environ.setdefault("TFMBS_MEMORY", "1GiB")
os.environ.setdefault("TFMBS_FALLBACK", "allow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gc  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch_tfmbs  # noqa: E402,F401


def run_python(code, env=None, timeout=120):
    """Runs `code` in a fresh interpreter; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


@pytest.fixture
def clean_memory():
    """Frees cached blocks so memory numbers start from what is live:
    garbage from earlier tests (tensors in reference cycles, such as a
    caught exception's traceback) is collected first, or a collection
    during the test would free it there."""
    gc.collect()
    torch.tfmbs.empty_cache()
    yield
    torch.tfmbs.empty_cache()


def pytest_terminal_summary(terminalreporter):
    """How much of the OpInfo sweep ran on tfmbs kernels (when it ran)."""
    opinfo = sys.modules.get("test_opinfo")
    if opinfo is None or not opinfo.FALLBACKS:
        return
    used = {name: ops for name, ops in opinfo.FALLBACKS.items() if ops}
    aten = sorted(set().union(*used.values())) if used else []
    terminalreporter.write_line(
        f"OpInfo sweep: {len(opinfo.FALLBACKS) - len(used)} of {len(opinfo.FALLBACKS)} ops ran only "
        f"tfmbs kernels; {len(used)} used the CPU fallback for {len(aten)} ATen ops: {', '.join(aten)}")
