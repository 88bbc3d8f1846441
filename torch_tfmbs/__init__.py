"""tfmbs: a PyTorch device for the Ternary Fabric, emulated on the host.

`import torch_tfmbs` (or plain `import torch`, through the torch.backends
entry point) registers the "tfmbs" device: `model.to("tfmbs")` runs with
CPU's numbers, and `torch.tfmbs` has the CUDA-style device and memory API.
"""


def _autoload():
    """Entry point of the torch.backends group: importing is registering.

    Defined before `import torch`: when the user imports torch_tfmbs first,
    torch's autoload finds this module half-imported and calls this."""


import sys  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

from . import _C  # noqa: E402

try:
    _C._init()
except ValueError as _config_error:
    # The backend autoloads with `import torch`: a bad TFMBS_* value must not
    # break CPU-only scripts. The device raises the same error at each use.
    warnings.warn(f"tfmbs is not usable: {_config_error}", RuntimeWarning, stacklevel=2)

from . import device as _device_module  # noqa: E402
from .fallback import fallback_stats, reset_fallback_stats, set_fallback_mode  # noqa: E402,F401
from . import fabric  # noqa: E402,F401
from .memory import memory_summary  # noqa: E402,F401
from .profiler import profiler  # noqa: E402,F401


def _register():
    # The rename is once per process; autoload and an explicit import may
    # both get here.
    if torch._C._get_privateuse1_backend_name() != "tfmbs":
        torch.utils.rename_privateuse1_backend("tfmbs")
    if not hasattr(torch, "tfmbs"):
        torch._register_device_module("tfmbs", _device_module)
    # `from torch.tfmbs.amp import autocast`, as code written for
    # torch.cuda.amp does, is an import of a submodule: torch.tfmbs being a
    # module rather than a package, that finds it only in sys.modules.
    sys.modules.setdefault("torch.tfmbs.amp", _device_module.amp)
    if not hasattr(torch.Tensor, "is_tfmbs"):
        torch.utils.generate_methods_for_privateuse1_backend(for_storage=True)


_register()

if "torch._inductor.codegen.common" in sys.modules:
    # Inductor looks for the device's classes once, on its first compile,
    # which may have come before this import.
    from ._inductor import register_backend as _register_inductor_backend
    _register_inductor_backend()

# The autograd engine runs a tfmbs node on a device worker thread, which may
# drop the last reference to a finished graph task (holding Python objects)
# after backward() has returned; if the interpreter is exiting by then, the
# worker's GIL request kills it and the process aborts. The device needs no
# thread of the engine's (streams have their own workers), so nothing is
# gained by the hop: run backward on the calling thread, as for CPU tensors.
torch._C._set_multithreading_enabled(False)


# Ternary linear layers on the fabric: quantization and packing, TFMBSLinear,
# convert() / fabric_linear(), and views of the ternary ops' state.
from . import quant, nn  # noqa: E402,F401
from .convert import (ConvertReport, convert, fabric_linear, fabric_linear_enabled,  # noqa: E402,F401
                      set_fabric_linear)
from .nn import TFMBSLinear  # noqa: E402,F401
from .ternary import fabric_telemetry, frame_cache_info, linear_engine  # noqa: E402,F401
from .attention import sliding_window_attention  # noqa: E402,F401

# torch.distributed: the "tfmbs_gloo" backend (the default for tfmbs) and the
# collectives on tfmbs tensors. `import torch` has imported torch.distributed
# already, so registering here costs little.
from . import distributed  # noqa: E402,F401
