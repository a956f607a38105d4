"""Start one training function on one process, N local processes, or as one rank of a larger job.

``launch(main_fn, num_processes=N, args=(...))`` decides how this process takes part, in this order:

1. **Started by a launcher** (``torchrun``, ``torch.distributed.run``, or anything that sets
   ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``): this process is one rank; the
   process group is initialised from those variables (``env://``). ``LOCAL_RANK`` picks the GPU.
2. **A SLURM step with several tasks** (``srun``, or submitit: ``SLURM_STEP_NUM_TASKS > 1``; a
   batch script outside ``srun`` is one process): each task is
   one rank. Rank, world size, local rank and the master host come from ``SLURM_PROCID``,
   ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the first host of ``SLURM_JOB_NODELIST`` (read by
   submitit's ``SlurmJobEnvironment``); the port is ``MASTER_PORT`` or derived from the job id,
   so every task agrees without talking first.
3. **Otherwise** ``num_processes`` processes are spawned on this machine (default: one per visible
   GPU, one on a machine without GPU). With one process nothing is spawned and no process group is
   created: ``lazydet.utils.comm`` then answers world size 1.

The backend is NCCL when the ranks use GPUs and gloo on CPU. Every rank runs
``main_fn(*args)``; the process group is destroyed when it returns or raises. ``launch`` returns
rank 0's return value (it must be picklable when processes are spawned).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import pickle
import random
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from lazydet.utils import comm

__all__ = [
    "DistributedSetup",
    "default_num_processes",
    "launch",
    "linear_scaling",
    "wrap_model",
]

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclasses.dataclass(frozen=True)
class DistributedSetup:
    """How this process takes part in a run started by torchrun or SLURM."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    source: str  # "env" (torchrun and other launchers) or "slurm"


def default_num_processes() -> int:
    """One process per visible GPU; one process on a machine without GPU."""
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _int_env(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"The environment variable {name}={value!r} must be an integer: it is read as the "
            "process's place in a distributed run. Fix or unset it."
        ) from None


def _launched_by_torchrun() -> bool:
    # RANK and WORLD_SIZE mark a launcher's process; MASTER_ADDR/MASTER_PORT alone are also
    # how a user picks the rendezvous of a SLURM job, so they do not count on their own.
    present = [v for v in ("RANK", "WORLD_SIZE") if v in os.environ]
    if not present:
        return False
    missing = [v for v in _LAUNCHER_VARIABLES if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"The environment sets {', '.join(present)} but not {', '.join(missing)}: a "
            "distributed launcher (torchrun) sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. "
            "Unset the stray variables to run locally, or start the job with torchrun."
        )
    return True


def _slurm_tasks() -> int:
    # Only a job *step* (srun, or submitit's srun) has one task per rank. A batch script itself
    # also sees SLURM_PROCID=0 and the job's SLURM_NTASKS, but it is one process: joining as
    # rank 0 of SLURM_NTASKS would wait forever for ranks nobody started. srun sets
    # SLURM_STEP_NUM_TASKS; the batch step does not.
    if "SLURM_PROCID" not in os.environ or "SLURM_STEP_NUM_TASKS" not in os.environ:
        return 0
    return _int_env("SLURM_STEP_NUM_TASKS")


def _free_port() -> int:
    # Bind to port 0 so the OS picks a free port; a tiny race (another program taking it before
    # rank 0 binds) is the price of not needing a fixed port, as in torch's own tests.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gpu_index(rank: int, local_rank: int) -> int:
    """The GPU of a rank: its local rank among the GPUs it sees, or the only one it sees (a
    SLURM task started with ``--gpus-per-task=1`` sees just its own)."""
    count = torch.cuda.device_count()
    if local_rank < count:
        return local_rank
    if count == 1:
        return 0
    raise RuntimeError(
        f"Rank {rank} has local rank {local_rank} but sees {count} GPU(s): start at most one "
        "process per GPU (check CUDA_VISIBLE_DEVICES, --nproc-per-node, or SLURM's "
        "--ntasks-per-node / --gpus-per-task)."
    )


def _init_process_group(
    *, backend: str, init_method: str, rank: int, world_size: int, local_rank: int, timeout
) -> None:
    if backend == "nccl":
        torch.cuda.set_device(_gpu_index(rank, local_rank))
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )
    # Tell comm.get_local_rank() (the process group does not know local ranks).
    os.environ["LOCAL_RANK"] = str(local_rank)


def _cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _limit_cpu_threads(local_world_size: int) -> None:
    # N processes on one machine would each start one thread per core and fight for them;
    # OMP_NUM_THREADS, when set, is the user's explicit choice.
    if local_world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))


def _spawned_worker(
    local_rank: int,
    main_fn: Callable[..., Any],
    args: tuple,
    world_size: int,
    backend: str,
    init_method: str,
    timeout: datetime.timedelta,
    results: Any,
) -> None:
    _limit_cpu_threads(world_size)
    _init_process_group(
        backend=backend,
        init_method=init_method,
        rank=local_rank,
        world_size=world_size,
        local_rank=local_rank,
        timeout=timeout,
    )
    try:
        result = main_fn(*args)
        if local_rank == 0:
            # Plain pickle copies tensors; the queue's own pickler would share their memory
            # through this process, which is gone by the time the parent reads them.
            results.put(("result", local_rank, pickle.dumps(result)))
    except BaseException as error:
        # The parent re-raises it with its own type, so a caller's `except ValueError` (one
        # clear message for a user's mistake) works the same with N processes as with one.
        # An unpicklable error: the parent still gets torch's ProcessRaisedException.
        with contextlib.suppress(Exception):
            results.put(("error", local_rank, pickle.dumps(error)))
        raise
    finally:
        _cleanup()


@contextlib.contextmanager
def _relay_signals_to(children: list[Any]) -> Iterator[None]:
    """While the spawned ranks run, the parent must outlive them: its death would kill them (they
    are daemons) in the middle of the checkpoint a stop signal asks them to save.

    SIGTERM and SIGUSR2 sent to the parent alone (``kill PID``, a scheduler) are passed on to the
    ranks, whose trainers save and stop. SIGINT is only ignored here: Ctrl-C in a terminal already
    reaches every process of the foreground group, and a second copy would read as "abort
    without saving".
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def relay(signum: int, frame: Any) -> None:
        for child in children:
            if child.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    def ignore(signum: int, frame: Any) -> None:
        logger.warning("%s: waiting for the ranks to save and stop", signal.Signals(signum).name)

    handlers = {signal.SIGINT: ignore, signal.SIGTERM: relay, signal.SIGUSR2: relay}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_backend(backend: str, world_size: int) -> str:
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"launch: backend={backend!r} is not supported; use 'gloo' or 'nccl'.")
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError(
            f"launch: backend='nccl' needs CUDA GPUs and this machine has none ({world_size} "
            "processes asked). Use backend='gloo' (the default without GPU)."
        )
    return backend


def launch(
    main_fn: Callable[..., Any],
    *,
    num_processes: int | None = None,
    args: tuple = (),
    backend: str | None = None,
    timeout: datetime.timedelta = _DEFAULT_TIMEOUT,
) -> Any:
    """Run ``main_fn(*args)`` on every rank of this run (see the module docstring for how the
    ranks are found) and return rank 0's result.

    Args:
        main_fn: the per-rank function. For spawned processes it must be importable by name
            (a module-level function, not a lambda or a closure) and ``args`` picklable.
        num_processes: local processes to spawn when no launcher started this one; ``None``:
            :func:`default_num_processes`. Must be 1 (or ``None``) under torchrun or SLURM, whose
            own settings say how many processes run.
        backend: ``"nccl"`` or ``"gloo"``; ``None``: NCCL with GPUs, gloo without.
        timeout: how long a collective may wait for the slowest rank before failing.
    """
    if num_processes is not None and (
        isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1
    ):
        raise ValueError(
            f"train.num_processes={num_processes!r} must be a positive integer (or null: one "
            "process per visible GPU, one on a machine without GPU)."
        )
    backend = _check_backend(backend or _default_backend(), num_processes or 1)
    if dist.is_available() and dist.is_initialized():
        # Called from inside a rank (a notebook that set the group up itself, or a nested call).
        return main_fn(*args)

    external = "env" if _launched_by_torchrun() else "slurm" if _slurm_tasks() > 1 else None
    if external is not None:
        if num_processes not in (None, 1):
            raise ValueError(
                f"train.num_processes={num_processes} asks to spawn processes, but this process "
                f"was started by {'torchrun' if external == 'env' else 'SLURM'} as one rank of a "
                "larger run: the launcher decides the number of processes. Leave "
                "train.num_processes unset."
            )
        setup = _setup_from_environment(external, backend)
        logger.debug("joined the process group: %s", setup)
        _limit_cpu_threads(_int_env("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else 1)
        try:
            return main_fn(*args)
        finally:
            _cleanup()

    world_size = default_num_processes() if num_processes is None else num_processes
    if world_size == 1:
        return main_fn(*args)
    if backend == "nccl" and world_size > torch.cuda.device_count():
        raise ValueError(
            f"train.num_processes={world_size} but this machine shows {torch.cuda.device_count()} "
            "GPU(s), and NCCL needs one GPU per process. Lower train.num_processes, or run on "
            "CPU with gloo (CUDA_VISIBLE_DEVICES= hides the GPUs)."
        )
    try:
        pickle.dumps((main_fn, args))
    except Exception as e:
        raise TypeError(
            f"launch: {getattr(main_fn, '__qualname__', main_fn)!r} and its args must be picklable "
            f"to start {world_size} processes ({type(e).__name__}: {e}). Use a module-level "
            "function (not a lambda, closure or method of a local class) and plain arguments."
        ) from e
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    results = mp.get_context("spawn").SimpleQueue()
    processes = mp.start_processes(
        _spawned_worker,
        args=(main_fn, args, world_size, backend, init_method, timeout, results),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    # Read rank 0's result while waiting: a large result fills the pipe, and rank 0 would block
    # in put() forever if nobody read before joining. join() re-raises a rank's exception with
    # its traceback and stops the other ranks.
    messages: list[tuple[str, int, bytes]] = []
    try:
        with _relay_signals_to(processes.processes):
            while not processes.join(timeout=0.5):
                while not results.empty():
                    messages.append(results.get())
    except ProcessException as failure:
        while not results.empty():
            messages.append(results.get())
        errors = [m for m in messages if m[0] == "error"]
        if errors:
            # The first error sent is the cause; the others are usually ranks whose collective
            # broke because that rank left.
            _, rank, payload = errors[0]
            error = pickle.loads(payload)
            logger.error("Rank %d of %d failed: %s", rank, world_size, failure)
            raise error from failure
        raise
    while not results.empty():
        messages.append(results.get())
    payloads = [m[2] for m in messages if m[0] == "result"]
    return pickle.loads(payloads[0]) if payloads else None


def _export_slurm_environment() -> tuple[int, int, int]:
    """Rank, world size and local rank of this SLURM task; exports the ``env://`` variables.

    submitit's ``SlurmJobEnvironment`` reads ``SLURM_PROCID``, ``SLURM_NTASKS``,
    ``SLURM_LOCALID`` and expands ``SLURM_JOB_NODELIST`` (``node[3-4]`` -> ``node3, node4``); the
    first host is the rendezvous. The port is ``MASTER_PORT`` if set, else drawn from the job id
    as submitit's ``TorchDistributedEnvironment`` does, so every task picks the same one without
    talking first. (That class itself only works inside a submitit job; this works under plain
    ``srun`` too.)
    """
    from submitit.slurm.slurm import SlurmJobEnvironment

    job = SlurmJobEnvironment()
    port = os.environ.get("MASTER_PORT") or str(random.Random(job.job_id).randint(20000, 60000))
    os.environ.update(
        MASTER_ADDR=os.environ.get("MASTER_ADDR") or job.hostnames[0],
        MASTER_PORT=port,
        RANK=str(job.global_rank),
        WORLD_SIZE=str(job.num_tasks),
        LOCAL_RANK=str(job.local_rank),
        LOCAL_WORLD_SIZE=str(max(1, job.num_tasks // max(1, job.num_nodes))),
    )
    return job.global_rank, job.num_tasks, job.local_rank


def _setup_from_environment(source: str, backend: str) -> DistributedSetup:
    if source == "slurm":
        rank, world_size, local_rank = _export_slurm_environment()
    else:
        rank, world_size = _int_env("RANK"), _int_env("WORLD_SIZE")
        local_rank = _int_env("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"The environment says rank={rank}, world_size={world_size}: need 0 <= rank < "
            "world_size. Check the launcher's settings."
        )
    _init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        timeout=_DEFAULT_TIMEOUT,
    )
    return DistributedSetup(
        rank=rank, world_size=world_size, local_rank=local_rank, backend=backend, source=source
    )


def wrap_model(
    model: nn.Module,
    *,
    sync_bn: bool = False,
    find_unused_parameters: bool = False,
    sync_buffers: bool = False,
) -> nn.Module:
    """Prepare ``model`` (already on its device) for this run's world size.

    One process: ``model`` unchanged. Several: ``DistributedDataParallel``, which averages the
    gradients over the ranks during ``backward``; with ``sync_bn`` every ``BatchNorm`` first
    becomes a ``SyncBatchNorm`` (batch statistics over all ranks: the global batch, as one process
    would see it). All ranks start from rank 0's parameters and buffers; with ``sync_buffers``
    rank 0's buffers are also pushed to the others before every forward (off by default: BN
    running statistics then stay per rank, as in Detectron2; frozen BN has none that change).
    """
    if not comm.is_distributed():
        return model
    if sync_bn:
        device = next(model.parameters(), torch.empty(0)).device
        if device.type != "cuda":
            raise ValueError(
                "train.sync_bn=true needs GPUs: torch's SyncBatchNorm has no CPU implementation. "
                "On CPU use norm='GN' or 'FrozenBN', or keep train.sync_bn=false."
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device = next(model.parameters(), torch.empty(0)).device
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=device_ids,
        forward_sync_buffers=sync_buffers,
        find_unused_parameters=find_unused_parameters,
    )


def linear_scaling(
    *, lr: float, total_batch_size: int, reference_world_size: int, world_size: int
) -> tuple[float, int, float]:
    """Detectron2's linear scaling rule (Goyal et al. 2017) for a changed number of processes.

    With ``reference_world_size`` set, a config describes a run on that many processes; on
    ``world_size`` processes the *per-process* batch is kept, so the global batch, and with it
    the learning rate, scale by ``world_size / reference_world_size``, and the schedule's length
    by the inverse (the same number of images seen). Returns ``(lr, total_batch_size,
    iteration_factor)``; multiply ``max_iter``, warm-up and decay steps by ``iteration_factor``.
    Without the option (the default) the global batch is fixed and split over the processes, so
    the learning rate does not change with the world size.
    """
    if reference_world_size < 1 or world_size < 1:
        raise ValueError(
            f"train.reference_world_size={reference_world_size} and world size {world_size} must "
            "be positive."
        )
    if total_batch_size % reference_world_size:
        raise ValueError(
            f"dataloader.train.total_batch_size={total_batch_size} is not divisible by "
            f"train.reference_world_size={reference_world_size}."
        )
    factor = world_size / reference_world_size
    new_batch = total_batch_size // reference_world_size * world_size
    return lr * factor, new_batch, 1.0 / factor
