"""torch.tfmbs: the device module, with the names torch.cuda uses."""
import torch

from . import _C, amp, memory  # noqa: F401  (torch.tfmbs.amp, torch.tfmbs.memory)
from ._device_index import index as _index
from .memory import (  # noqa: F401
    empty_cache,
    max_memory_allocated,
    max_memory_reserved,
    mem_get_info,
    memory_allocated,
    memory_reserved,
    memory_stats,
    memory_stats_as_nested_dict,
    memory_summary,
    reset_accumulated_memory_stats,
    reset_max_memory_allocated,
    reset_peak_memory_stats,
)
from .properties import (  # noqa: F401
    get_device_capability,
    get_device_name,
    get_device_properties,
    is_bf16_supported,
)
from .random import (  # noqa: F401
    default_generators,
    get_rng_state,
    get_rng_state_all,
    initial_seed,
    manual_seed,
    manual_seed_all,
    seed,
    seed_all,
    set_rng_state,
    set_rng_state_all,
)
from .streams import (  # noqa: F401
    Event,
    Stream,
    _await_streams,
    _sleep,
    current_stream,
    default_stream,
    set_stream,
    stream,
    synchronize,
)


def is_available():
    return _C.device_count() > 0


def device_count():
    return _C.device_count()


def current_device():
    return _C.current_device()


def set_device(device):
    _C.set_device(_index(device))


def is_initialized():
    """As torch.cuda's: False in a child forked after the parent used the
    device, where the device cannot be used. The devices are set up at import,
    so everywhere else it is True."""
    return not _C.in_bad_fork()


def _lazy_init():
    pass


def _is_in_bad_fork():
    return _C.in_bad_fork()


def get_amp_supported_dtype():
    return [torch.float16, torch.bfloat16]


class device:
    """Context manager that makes `device` the current tfmbs device; as
    torch.cuda.device, None or a negative index makes it a no-op."""

    def __init__(self, device):
        self.idx = -1 if device is None or (isinstance(device, int) and device < 0) else _index(device)
        self.prev_idx = -1

    def __enter__(self):
        self.prev_idx = _C.current_device()
        if self.idx != -1:
            _C.set_device(self.idx)

    def __exit__(self, *exc):
        _C.set_device(self.prev_idx)
        return False


class device_of(device):  # noqa: N801 (torch.cuda's name)
    """`device` for the device of a tensor or storage: a no-op for one that
    is not on a tfmbs device, as torch.cuda.device_of."""

    def __init__(self, obj):
        super().__init__(obj.get_device() if obj.device.type == "tfmbs" else -1)


# The classes inductor reads from the device module on its first compile;
# importing inductor eagerly would slow `import torch_tfmbs` by a second.
_INDUCTOR_CLASSES = ("Scheduling", "PythonWrapperCodegen", "CppWrapperCodegen", "WrapperFxCodegen")


def __getattr__(name):
    if name in _INDUCTOR_CLASSES:
        from . import _inductor
        return getattr(_inductor, name)
    raise AttributeError(f"module 'torch.tfmbs' has no attribute {name!r}")
