"""What torch.tfmbs says a device is: get_device_properties, get_device_name,
get_device_capability, is_bf16_supported, as torch.cuda has them."""
import dataclasses

from . import _C
from ._device_index import index as _index

NAME = "Ternary Fabric (emulated)"

# get_device_capability's (major, minor): the generation of the fabric this
# backend emulates, i.e. the version of its task descriptor format
# (kTfdVersion in csrc/fabric/tfd.h), which has no minor revisions. It is not
# a CUDA compute capability: code comparing it with (8, 0) is CUDA-only code.
CAPABILITY = (1, 0)


class InvalidDeviceIdError(IndexError, AssertionError):
    """A device index with no tfmbs device. torch.cuda.get_device_properties
    raises AssertionError("Invalid device id"), every other tfmbs call raises
    IndexError: this is both, so code written for either catches it."""


@dataclasses.dataclass(frozen=True)
class _TfmbsDeviceProperties:
    name: str
    major: int
    minor: int
    total_memory: int  # bytes: the device's pool capacity (TFMBS_MEMORY)
    tiles: int  # TFMBS_TILES
    lanes_per_tile: int
    clock_mhz: int  # the cycle model's clock (TFMBS_CLOCK_MHZ); CUDA's clock_rate is in kHz
    engine_isa: str  # SIMD level the fast engine runs on this host: "scalar", "avx2", "avx512", "amx"


def get_device_properties(device=None):
    try:
        index = _index(device)
    except IndexError as e:
        raise InvalidDeviceIdError(f"Invalid device id: {e}") from None
    config = _C.fabric_config()
    return _TfmbsDeviceProperties(
        name=NAME, major=CAPABILITY[0], minor=CAPABILITY[1],
        total_memory=_C.pool_info(index)["capacity"], tiles=config["tiles"],
        lanes_per_tile=config["lanes_per_tile"], clock_mhz=config["clock_mhz"],
        engine_isa=config["engine_isa"])


def get_device_name(device=None):
    return get_device_properties(device).name


def get_device_capability(device=None):
    properties = get_device_properties(device)
    return properties.major, properties.minor


def is_bf16_supported(including_emulation=True):
    """bfloat16 tensors run on every tfmbs device (the host path computes them
    with CPU kernels), so there is no emulated-only case to tell apart: True
    whenever there is a device, as torch.cuda answers for native support."""
    return _C.device_count() > 0
