"""Rank-aware logging: one console copy (rank 0), one log file per rank in the run directory.

``setup_logging(output_dir)`` configures the root logger of the calling process, so the records
of lazydet and of the libraries it uses are handled alike:

- console: rank 0 prints INFO and above; on other ranks every console handler is lowered to
  ERROR and above (an error on rank 3 must still be seen), prefixed with the rank. A console
  handler that is already there (Hydra's, in the command's own process) is kept rather than
  doubled;
- files: ``output_dir/log.txt`` for rank 0 and ``output_dir/log.rank{r}.txt`` for rank ``r > 0``.

Propagation is left alone (pytest's ``caplog`` and an application's own handlers keep working).
Calling it again (a second run in the same process, a notebook) replaces the handlers it added
before instead of writing every line twice.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lazydet.utils import comm

__all__ = ["log_file_name", "setup_logging"]

_MARK = "_lazydet_handler"  # set on the handlers setup_logging adds, so a second call finds them


def log_file_name(rank: int) -> str:
    """``log.txt`` for rank 0, ``log.rank{rank}.txt`` for the others."""
    return "log.txt" if rank == 0 else f"log.rank{rank}.txt"


def _formatter(rank: int, world_size: int) -> logging.Formatter:
    prefix = f"[rank{rank}] " if world_size > 1 else ""
    return logging.Formatter(
        f"{prefix}[%(asctime)s %(name)s %(levelname)s] %(message)s", datefmt="%m/%d %H:%M:%S"
    )


def _is_console(handler: logging.Handler) -> bool:
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None)
        in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    )


def _file_handler(output_dir: str | Path, rank: int) -> logging.FileHandler:
    directory = Path(output_dir)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(
            f"The run directory {directory} is a file; log files need a directory there. "
            "Choose another hydra.run.dir (or remove the file)."
        )
    path = directory / log_file_name(rank)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as e:
        raise OSError(
            f"Cannot write the log file {path}: {e.strerror or e}. Make the run directory "
            "writable or choose another one (hydra.run.dir=...)."
        ) from e


def _rank_and_world_size() -> tuple[int, int]:
    """The process group's rank and size; before the group is joined (the first lines of a run
    started by torchrun or srun), the ones its launcher's variables promise."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return comm.get_rank(), comm.get_world_size()
    for rank_name, size_name in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS")):
        rank, size = os.environ.get(rank_name, ""), os.environ.get(size_name, "")
        if rank.isdigit() and size.isdigit():
            return int(rank), int(size)
    return 0, 1


def setup_logging(
    output_dir: str | Path | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    level: int = logging.INFO,
) -> logging.Logger:
    """Configure this process's logging for its rank; return the ``lazydet`` logger.

    Args:
        output_dir: the run directory for the per-rank log file (created if missing); ``None``:
            console only.
        rank, world_size: default to the process group's; before one is joined, to those
            that torchrun (``RANK``, ``WORLD_SIZE``) or srun (``SLURM_PROCID``,
            ``SLURM_STEP_NUM_TASKS``) set; else 0 and 1.
        level: the lowest level handled (console on rank 0 and files).
    """
    launched_rank, launched_size = _rank_and_world_size()
    rank = launched_rank if rank is None else rank
    world_size = launched_size if world_size is None else world_size
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = _formatter(rank, world_size)
    added: list[logging.Handler] = []
    consoles = [h for h in root.handlers if _is_console(h)]
    if rank == 0:
        if not consoles:
            console = logging.StreamHandler(sys.stdout)
            console.setLevel(level)
            added.append(console)
    else:
        for handler in consoles:
            handler.setLevel(max(handler.level, logging.ERROR))
        if not consoles:
            console = logging.StreamHandler(sys.stderr)
            console.setLevel(logging.ERROR)
            added.append(console)
    if output_dir is not None:
        file_handler = _file_handler(output_dir, rank)
        file_handler.setLevel(level)
        added.append(file_handler)
    for handler in added:
        handler.setFormatter(formatter)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return logging.getLogger("lazydet")
