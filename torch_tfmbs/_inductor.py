"""torch.compile's default backend (inductor) on tfmbs.

The pool is host memory at a stable address, so inductor's C++/OpenMP CPU
code generation runs on tfmbs buffers directly: kernels are generated as for
CPU, the Python wrapper allocates their buffers on the tfmbs device, and ops
inductor leaves as extern kernels (mm, addmm, SDPA, tfmbs:: custom ops) run
as tfmbs ops. Inductor finds the four classes below in torch.tfmbs on its
first compile (torch/_inductor/codegen/common.py, init_backend_registration);
importing this module registers the rest: the dynamo device interface and
the wrapper's device op overrides. ../shared/docs/SCALE.md has the why of
each piece.
"""
import torch
from torch._dynamo.device_interface import CpuInterface, register_interface_for_device
from torch._inductor import config as inductor_config
from torch._inductor.codegen import wrapper
from torch._inductor.codegen.common import DeviceOpOverrides, register_device_op_overrides
from torch._inductor.codegen.cpp import CppScheduling
from torch._inductor.virtualized import V

_CPU = torch.device("cpu")


class Scheduling(CppScheduling):
    """CPU's C++ kernels. While a kernel is generated the current device is
    CPU: inductor then types the C++ variables as for CPU and calls the kernel
    as a plain C function over the buffers' host pointers."""

    def codegen_node(self, node):
        with V.graph.set_current_device(_CPU):
            return super().codegen_node(node)

    def codegen_template(self, *args, **kwargs):
        with V.graph.set_current_device(_CPU):
            return super().codegen_template(*args, **kwargs)

    def flush(self):
        with V.graph.set_current_device(_CPU):
            return super().flush()


class _AwaitStreams:
    """Generated kernels read and write buffers directly: the work queued on
    the caller's streams (a side stream's fabric ops) runs first."""

    def wrap_kernel_call(self, name, call_args):
        return f"torch.tfmbs._await_streams(); {super().wrap_kernel_call(name, call_args)}"


class SubgraphPythonWrapperCodegen(_AwaitStreams, wrapper.SubgraphPythonWrapperCodegen):
    """The wrapper of a subgraph (torch.cond, while_loop, invoke_subgraph)."""


class PythonWrapperCodegen(_AwaitStreams, wrapper.PythonWrapperCodegen):
    """The Python wrapper, allocating on the buffer's own tfmbs device (the
    default one drops the index, and tfmbs emits no device guard)."""

    @staticmethod
    def create(is_subgraph, subgraph_name, parent_wrapper, partition_signatures=None):
        if is_subgraph:
            return SubgraphPythonWrapperCodegen(subgraph_name, parent_wrapper, partition_signatures)
        return PythonWrapperCodegen()

    def make_allocation(self, name, device, *args, **kwargs):
        line = super().make_allocation(name, device, *args, **kwargs)
        if device.type == "tfmbs" and device.index is not None:
            line = line.replace("device='tfmbs'", f"device='tfmbs:{device.index}'")
        return line


class _Unsupported:
    """The C++ wrapper (cpp_wrapper=True, AOTInductor) and the FX wrapper:
    not built for tfmbs; asking for them is a clear error."""

    supports_caching = False

    @staticmethod
    def create(*args, **kwargs):
        raise NotImplementedError("tfmbs: torch.compile supports inductor's Python wrapper only "
                                  "(not cpp_wrapper, AOTInductor or the FX wrapper)")


CppWrapperCodegen = WrapperFxCodegen = _Unsupported


class _OpOverrides(DeviceOpOverrides):
    """What the generated wrapper writes for device calls: its kernels are
    C functions run on the calling thread, with no stream to pass them."""

    def import_get_raw_stream_as(self, name):
        return f"def {name}(_):\n    return 0\n"

    def set_device(self, device_idx):
        return f"torch.tfmbs.set_device({device_idx})"

    def synchronize(self):
        return "torch.tfmbs.synchronize()"

    def device_guard(self, device_idx):
        return f"torch.tfmbs.device({device_idx})"

    def cpp_kernel_type(self):
        return "void*"


class _Interface(CpuInterface):
    """Dynamo's view of the device: CPU's properties (the kernels are CPU
    code), tfmbs's count and current device, no Triton."""

    is_available = staticmethod(lambda: torch.tfmbs.is_available())
    current_device = staticmethod(lambda: torch.tfmbs.current_device())
    device_count = staticmethod(lambda: torch.tfmbs.device_count())
    set_device = staticmethod(lambda device: torch.tfmbs.set_device(device))
    is_triton_capable = staticmethod(lambda device=None: False)


register_interface_for_device("tfmbs", _Interface)
register_device_op_overrides("tfmbs", _OpOverrides())
# The scheduler skips these loop rewrites for CPU nodes only; tfmbs nodes are
# CPU code, so they must skip them too (the first crashes on C++ groups).
inductor_config.loop_reindexing_after_fusion = False
inductor_config.loop_ordering_after_fusion = False
inductor_config.loop_index_inversion_in_fusion = False


def register_backend():
    """Registers the classes above with inductor directly: for a process in
    which inductor registered its devices before tfmbs existed."""
    from torch._inductor.codegen.common import register_backend_for_device
    register_backend_for_device("tfmbs", Scheduling, PythonWrapperCodegen, CppWrapperCodegen,
                                WrapperFxCodegen)
