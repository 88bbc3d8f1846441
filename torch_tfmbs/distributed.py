"""torch.distributed on tfmbs: Gloo, run over the tfmbs tensors' own memory.

The device pool is host memory at a stable address, so a CPU tensor over a
tfmbs tensor's bytes (no copy) is something Gloo reduces, sends and receives
in place, across machines as Gloo does. Two registrations make it so:

- PrivateUse1 kernels for the c10d:: ops, replacing torch's (which hand
  tfmbs tensors to the group's tfmbs backend: Gloo refuses them). Ours run
  the op again on CPU views of the tensors, which the dispatcher sends to the
  group's CPU backend. Any group with Gloo for CPU then takes tfmbs tensors,
  init_process_group("gloo") included.
- the "tfmbs_gloo" backend: a group whose one ProcessGroupGloo serves cpu
  and tfmbs. It is the default for tfmbs, and init_process_group() with no
  backend maps only the accelerator (tfmbs), so CPU tensors still find Gloo.

A fabric whose memory the host cannot address would need copies instead.
"""
import ctypes

import torch
import torch.distributed as dist

BACKEND = "tfmbs_gloo"

# Every c10d op torch gives a PrivateUse1 kernel.
OPS = ("allreduce_", "allreduce_coalesced_", "broadcast_", "allgather_", "allgather_coalesced_",
       "allgather_into_tensor_coalesced_", "_allgather_base_", "reduce_scatter_",
       "_reduce_scatter_base_", "reduce_scatter_tensor_coalesced_", "alltoall_", "alltoall_base_",
       "reduce_", "gather_", "scatter_", "barrier", "send", "recv_", "recv_any_source_")


def cpu_view(tensor):
    """A CPU tensor over `tensor`'s bytes. It holds `tensor`, as a CPU
    tensor holds its storage: whatever keeps the view (a Work, its result)
    keeps the memory it reads and writes."""
    if tensor.numel() == 0:
        return torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype)
    torch.tfmbs._await_streams()  # Gloo reads and writes the bytes directly
    storage = tensor.untyped_storage()
    buffer = (ctypes.c_char * storage.nbytes()).from_address(storage.data_ptr())
    buffer.owner = tensor
    return torch.frombuffer(buffer, dtype=tensor.dtype).as_strided(
        tensor.size(), tensor.stride(), tensor.storage_offset())


def _tensors(arg):
    if isinstance(arg, torch.Tensor):
        yield arg
    elif isinstance(arg, (list, tuple)):
        for item in arg:
            yield from _tensors(item)


def _map(arg, fn):
    if isinstance(arg, torch.Tensor):
        return fn(arg)
    if isinstance(arg, (list, tuple)):
        return [_map(item, fn) for item in arg]
    return arg


def _geometry(tensor):
    return tensor.data_ptr(), tensor.dtype, tuple(tensor.size()), tuple(tensor.stride())


def _check_one_device(name, args):
    devices = {t.device for a in args for t in _tensors(a)}
    if len(devices) > 1:
        raise ValueError(f"c10d::{name}: the tensors of a collective must be on one device, "
                         f"got tensors on {', '.join(sorted(map(str, devices)))}")


def _finish(work, restore):
    """A completed Work whose future holds the caller's tfmbs tensors where
    Gloo's holds the CPU views.

    It waits for Gloo's work here, as a tfmbs op run by its caller completes
    before it returns, so that Gloo raises the collective's error: a Work wrapping a
    future (the only kind Python can make) returns from wait() regardless.
    Works without a future (p2p, _reduce_scatter_base, as for CPU tensors)
    are Gloo's own, not waited for: their wait() completes only once."""
    work = dist.Work.unbox(work)
    try:
        future = work.get_future()
    except RuntimeError:
        return work.boxed()
    work.wait()  # raises the collective's error, after the group's timeout at most
    done = torch.futures.Future()
    done.set_result(restore(future.value()))
    return _create_work_from_future(done).boxed()


class _Views:
    """CPU views of one call's tfmbs tensors, and the way back: a CPU tensor
    Gloo hands out (a future's value) over a tfmbs tensor's memory becomes
    that tensor, or a view of it with the same geometry (e.g. a chunk of an
    all_gather_single output)."""

    def __init__(self):
        self._originals = {}  # view geometry -> the tfmbs tensor
        self._storages = {}  # storage address -> a tfmbs tensor on that storage

    def to_cpu(self, tensor):
        view = cpu_view(tensor)
        self._originals[_geometry(view)] = tensor
        self._storages[tensor.untyped_storage().data_ptr()] = tensor
        return view

    def to_tfmbs(self, tensor):
        original = self._originals.get(_geometry(tensor))
        if original is not None:
            return original
        owner = self._storages.get(tensor.untyped_storage().data_ptr())
        if owner is None:
            return tensor
        return owner.as_strided(tensor.size(), tensor.stride(), tensor.storage_offset())


def _kernel(name):
    op = getattr(torch.ops.c10d, name).default

    def run(*args):
        _check_one_device(name, args)  # so all of them are on tfmbs
        views = _Views()
        out = op(*[_map(a, views.to_cpu) for a in args])

        def restore(value):
            return _map(value, views.to_tfmbs)

        if isinstance(out, tuple):  # (output tensors, Work)
            return restore(out[0]), _finish(out[1], restore)
        return _finish(out, restore)

    return run


def _create(options, _backend_options):
    # What init_process_group does for "gloo", for one backend serving both devices.
    gloo = dist.ProcessGroupGloo(options.store, options.group_rank, options.group_size,
                                 options.timeout)
    gloo.options.global_ranks_in_group = options.global_ranks_in_group
    gloo.options.group_name = options.group_id
    gloo._set_sequence_number_for_group()
    # A whole group, not a backend: init_process_group registers a backend
    # only for the devices its config maps, and with no backend that is tfmbs.
    group = dist.ProcessGroup(options.store, options.group_rank, options.group_size)
    group._set_default_backend(dist.ProcessGroup.BackendType.GLOO)
    for device in ("cpu", "tfmbs"):
        group._register_backend(torch.device(device), dist.ProcessGroup.BackendType.GLOO, gloo)
    return group


if dist.is_available() and dist.is_gloo_available():
    from torch._C._distributed_c10d import _create_work_from_future

    _library = torch.library.Library("c10d", "IMPL")  # its kernels live as long as it does
    for _name in OPS:
        _library.impl(_name, _kernel(_name), "PrivateUse1")
    dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=["tfmbs", "cpu"])
