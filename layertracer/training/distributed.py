"""Process-group helpers for multi-process data-parallel training (``torchrun`` / ``accelerate launch``).

Every helper works without a process group too: then the world is one process of rank 0, collectives
return their input and ``barrier`` does nothing, so code written against these helpers runs unchanged
in a single process.

The launchers set ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each
process's environment; ``init_from_env`` turns them into a process group (``gloo`` on CPU, ``nccl`` on
CUDA, where each process also selects the GPU of its ``LOCAL_RANK``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Optional, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from layertracer.errors import LayerTracerError

T = TypeVar("T")

ENV_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset or not a number)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def is_initialized() -> bool:
    """Whether a default process group exists in this process."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the default group; 1 without a group."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group; 0 without a group."""
    return dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    """This process's index on its node: ``LOCAL_RANK`` from the environment, else the global rank
    modulo the visible GPUs (or 0)."""
    value = os.environ.get("LOCAL_RANK")
    if value is not None:
        try:
            return int(value)
        except ValueError:
            raise LayerTracerError(f"LOCAL_RANK={value!r} is not an integer") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return rank() % count if count else 0


def is_main() -> bool:
    """True in rank 0 (and in a single process): the process that writes files and logs."""
    return rank() == 0


def default_backend(device: Optional[torch.device] = None) -> str:
    """``nccl`` for a CUDA device (or, without a device, when CUDA is available), else ``gloo``."""
    if device is not None:
        return "nccl" if torch.device(device).type == "cuda" else "gloo"
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: Optional[str] = None, *, timeout: Optional[timedelta] = None) -> bool:
    """Create the default process group from the launcher's environment variables.

    Does nothing (returns False) when a group already exists or ``WORLD_SIZE`` is unset or 1. Otherwise
    it needs ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (a LayerTracerError names the
    missing ones), selects ``cuda:LOCAL_RANK`` for the ``nccl`` backend, and returns True. The group
    stays up for later calls; ``shutdown`` ends it.
    """
    if is_initialized():
        return False
    size = env_world_size()
    if size <= 1:
        return False
    if not dist.is_available():
        raise LayerTracerError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [name for name in ENV_VARS if not os.environ.get(name)]
    if missing:
        raise LayerTracerError(
            f"WORLD_SIZE={size} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
            "start the processes with torchrun or accelerate launch"
        )
    backend = backend or default_backend()
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise LayerTracerError("the nccl backend needs CUDA; use gloo on CPU")
        torch.cuda.set_device(local_rank())
    kwargs = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(
        backend=backend, init_method="env://", rank=int(os.environ["RANK"]), world_size=size, **kwargs
    )
    return True


def shutdown() -> None:
    """Destroy the default process group, if any."""
    if is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where small collective tensors live: the current GPU for nccl, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every process; a no-op in a single process."""
    if world_size() > 1:
        dist.barrier()


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s ``flag`` on every process (the others' values are ignored); ``flag`` itself in a
    single process. Every process must call it: it also orders them after ``src``'s call."""
    if world_size() <= 1:
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.broadcast(value, src=src)
    return bool(value.item())


def broadcast_int(number: int, src: int = 0) -> int:
    """Rank ``src``'s ``number`` on every process; ``number`` itself in a single process."""
    if world_size() <= 1:
        return int(number)
    value = torch.tensor([int(number)], dtype=torch.int64, device=_collective_device())
    dist.broadcast(value, src=src)
    return int(value.item())


def all_agree(flag: bool) -> bool:
    """True on every process when ``flag`` is true on every process (a logical AND over ranks)."""
    if world_size() <= 1:
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over processes, in float64; the values themselves in a single process."""
    if world_size() <= 1:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def all_reduce_mean(value: float) -> float:
    """The mean of ``value`` over processes (float64 sum / world size); ``value`` in a single process."""
    size = world_size()
    if size <= 1:
        return float(value)
    return all_reduce_sum([value])[0] / size


def shard_indices(indices: Sequence[T], rank_: int, world_size_: int, *, strided: bool = False) -> list[T]:
    """Rank ``rank_``'s share of a global micro-batch ``indices``: the contiguous slice
    ``[rank * k, (rank + 1) * k)`` with ``k = len(indices) / world_size`` (or, with ``strided``, every
    ``world_size``-th item from ``rank``). The shares of all ranks partition ``indices``.

    Raises LayerTracerError when the length is not a multiple of the world size: ranks with unequal
    shares would weight their sequences unequally in the averaged gradient.
    """
    if world_size_ < 1 or not 0 <= rank_ < world_size_:
        raise LayerTracerError(f"rank {rank_} is outside a world of {world_size_} processes")
    count = len(indices)
    if count % world_size_:
        raise LayerTracerError(
            f"the batch size {count} is not a multiple of the {world_size_} processes: every process takes "
            f"batch_size / world_size sequences of each micro-batch; use a multiple of {world_size_}"
        )
    if strided:
        return list(indices[rank_::world_size_])
    share = count // world_size_
    return list(indices[rank_ * share : (rank_ + 1) * share])


def my_share(count: int) -> range:
    """The items ``rank::world_size`` of ``count`` items: this process's share when work is split over
    the ranks item by item (every item in a single process). The shares of all ranks partition
    ``range(count)`` and differ in length by at most one."""
    return range(rank(), count, world_size())


def sum_over_ranks(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Element-wise sums over processes of named numpy arrays (same names, shapes and dtypes on every
    rank), as new arrays; copies of the arrays themselves in a single process. Work split over ranks
    is gathered this way: each rank fills its own rows and leaves the others zero. Float arrays are
    summed in float64 and given back in their own dtype; bool arrays as counts of True (int64)."""
    out = {}
    for name in sorted(arrays):  # the same order on every rank: collectives pair up by order
        array = np.asarray(arrays[name])
        if array.dtype == np.bool_:
            array = array.astype(np.int64)
        if world_size() <= 1:
            out[name] = array.copy()
            continue
        wide = np.float64 if array.dtype.kind == "f" else np.int64
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=wide)).to(_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        out[name] = tensor.cpu().numpy().astype(array.dtype, copy=False)
    return out
