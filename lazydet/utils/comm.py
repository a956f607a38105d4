"""The torch.distributed primitives lazydet uses, in one place.

Every function works without an initialised process group (one process, world size 1), so the
trainer, the evaluators and the models call them unconditionally.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def select_device(spec: str | torch.device | None, *, key: str = "train.device") -> torch.device:
    """``spec`` as a device; ``None``: this process's GPU if any, else the CPU. The one device
    choice of training, evaluation and prediction.

    "This process's GPU" is the current CUDA device, which ``lazydet.engine.launch`` sets per
    rank (``LOCAL_RANK``, or the only visible GPU of a SLURM task with ``--gpus-per-task=1``).
    ``key`` names the setting in the error for a CUDA device on a machine without one.
    """
    if spec is not None:
        device = torch.device(spec)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"{key}={str(spec)!r} but no CUDA device is visible; use {key}=cpu or leave it "
                "unset (pick automatically)."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX tiles).

    Where it has not, oneDNN emulates bf16 and an autocast step is slower than float32, so
    recipes that want bf16 on the CPU ask this first. False where torch cannot tell.
    """
    # torch.cpu exposes the checks only under private names (torch 2.x); no public equivalent.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def is_distributed() -> bool:
    """True when a process group is initialised and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_local_rank() -> int:
    """This process's index on its machine (its GPU): ``LOCAL_RANK`` as set by torchrun, SLURM
    (through ``lazydet.engine.launch``) or spawned workers; 0 without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """A barrier across all processes; a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over all processes (in place, and returned).

    ``tensor`` must be on a device the process group's backend supports (CPU for gloo, CUDA for
    NCCL).
    """
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(get_world_size())
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj from rank 0, obj from rank 1, ...]`` on every process (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_object(obj: Any, *, dst: int = 0) -> list[Any] | None:
    """``obj`` of every process, in rank order, on ``dst``; ``None`` on the other ranks."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def reduce_dict_mean(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of scalars (same keys on every process) across processes; for logging."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    all_reduce_mean(stacked)
    return dict(zip(keys, stacked.tolist()))
