"""Resumable checkpoints in a run directory: naming, the ``last_checkpoint`` pointer, keeping the
last K, falling back past a corrupt file, and the random-number-generator states.

Files in the run directory::

    model_0005000.pth      a periodic checkpoint after 5000 completed iterations
    model_final.pth        written when the run reaches schedule.max_iter (kept forever)
    last_checkpoint        one line: the file name of the newest complete checkpoint

Each file is written by ``lazydet.checkpoint.save_checkpoint`` (temporary file, fsync, rename), so
a kill during a save leaves the previous checkpoints whole; the pointer is replaced the same way
after the file it names is complete. A file holds the trainer's state (``Trainer.state_dict``:
model, optimizer, scheduler, scaler, iteration, per-rank RNG states and data positions) plus
``"metadata"``, and is read back with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FINAL_CHECKPOINT",
    "POINTER_FILE",
    "Checkpointer",
    "capture_rng_state",
    "restore_rng_state",
]

logger = logging.getLogger(__name__)

FINAL_CHECKPOINT = "model_final.pth"
POINTER_FILE = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")
# Entries a checkpoint must hold for a resume (metadata-only or weights-only files do not count).
_RESUME_KEYS = ("model", "optimizer", "iteration")


def periodic_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


class Checkpointer:
    """Saves and finds the resumable checkpoints of one run directory.

    Args:
        directory: the run directory (created if needed; checked writable at once, so a bad
            ``hydra.run.dir`` fails before the first step rather than at the first save).
        max_to_keep: periodic checkpoints kept (the newest); ``model_final.pth`` is never pruned.
        metadata: stored under ``"metadata"`` in every file (``lazydet.checkpoint.build_metadata``).
        run_outputs: other entries of the run directory that belong to the checkpoints' run
            (``metrics.jsonl``, ``tensorboard``): :meth:`move_aside` moves them too.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int = 3,
        metadata: Mapping[str, Any] | None = None,
        run_outputs: tuple[str, ...] = (),
    ) -> None:
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = Path(directory)
        self.max_to_keep = max_to_keep
        self.metadata = dict(metadata or {})
        self.run_outputs = run_outputs
        self._lock_file: Any = None
        self._check_writable()

    def lock(self) -> None:
        """Claim the run directory for this process (an exclusive ``flock`` on ``.lock``), so a
        second run started on the same directory stops at once instead of interleaving its
        checkpoints with ours. The kernel releases it when the process ends, even on SIGKILL."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, the saves stay atomic
            return
        path = self.directory / ".lock"
        file = path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise BlockingIOError(
                e.errno,
                f"The run directory {self.directory} is in use by a training process "
                f"({holder}). Wait for it to finish, stop it (Ctrl-C saves and exits), or choose "
                "another directory with hydra.run.dir=DIR.",
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()}\n")
        file.flush()
        self._lock_file = file

    def unlock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    def _check_writable(self) -> None:
        probe = self.directory / f".write_probe.{os.getpid()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise PermissionError(
                f"The run directory {self.directory} is not writable ({e.strerror or e}); "
                "checkpoints could not be saved. Choose another with hydra.run.dir=DIR, or fix "
                "its permissions."
            ) from e

    # ------------------------------------------------------------------ saving
    def save(self, name: str, state: Mapping[str, Any]) -> Path:
        """Write ``state`` (+ metadata) to ``directory/name`` atomically, point
        ``last_checkpoint`` at it and prune old periodic files. Call on one rank only."""
        from lazydet.checkpoint import save_checkpoint

        path = self.directory / name
        start = time.perf_counter()
        try:
            save_checkpoint(
                path, {**state, **({"metadata": self.metadata} if self.metadata else {})}
            )
        except OSError as e:
            raise OSError(
                e.errno,
                f"Saving checkpoint {path} failed ({e.strerror or e}); the previous checkpoints "
                f"in {self.directory} are intact. Free disk space or fix permissions, then run "
                "the same command again to resume.",
            ) from e
        self._write_pointer(name)
        self._prune()
        logger.info("Saved checkpoint %s (%.1f s)", path, time.perf_counter() - start)
        return path

    def _write_pointer(self, name: str) -> None:
        pointer = self.directory / POINTER_FILE
        tmp = pointer.with_name(f".{POINTER_FILE}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as file:
            file.write(name + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, pointer)

    def periodic_checkpoints(self) -> list[Path]:
        """Periodic checkpoint files, oldest (fewest iterations) first."""
        found = [
            (int(m.group(1)), p)
            for p in self.directory.glob("model_*.pth")
            if (m := _PERIODIC.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def _prune(self) -> None:
        for path in self.periodic_checkpoints()[: -self.max_to_keep]:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ resuming
    def candidates(self) -> list[Path]:
        """Files to try for a resume, best first: the pointer's target, ``model_final.pth``,
        then the periodic checkpoints from the newest down."""
        order: list[Path] = []
        pointer = self.directory / POINTER_FILE
        if pointer.is_file():
            named = pointer.read_text(encoding="utf-8").strip()
            # Only a bare file name inside this directory is honoured (a copied run dir keeps
            # working; a pointer cannot send the resume elsewhere).
            if named and Path(named).name == named and (self.directory / named).is_file():
                order.append(self.directory / named)
        final = self.directory / FINAL_CHECKPOINT
        for path in [final, *reversed(self.periodic_checkpoints())]:
            if path.is_file() and path not in order:
                order.append(path)
        return order

    def load_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads and holds a resume state, or None if there is none.

        A truncated, corrupt or incomplete file is skipped with a warning naming it and the file
        used instead; it is left on disk (nothing is deleted on a failed read).
        """
        from lazydet.checkpoint import load_checkpoint

        skipped: list[str] = []
        for path in self.candidates():
            try:
                state = load_checkpoint(path)
            except Exception as e:  # any unreadable file: try the previous one
                skipped.append(f"{path.name} ({type(e).__name__}: {str(e).splitlines()[0]})")
                continue
            missing = [k for k in _RESUME_KEYS if k not in state]
            if missing:
                skipped.append(f"{path.name} (no {', '.join(missing)}: not a resume checkpoint)")
                continue
            if skipped:
                logger.warning(
                    "Skipped unusable checkpoint(s) in %s: %s. Resuming from %s instead.",
                    self.directory,
                    "; ".join(skipped),
                    path.name,
                )
            return path, state
        if skipped:
            logger.warning(
                "No usable checkpoint in %s (%s): starting from the beginning.",
                self.directory,
                "; ".join(skipped),
            )
        return None

    def move_aside(self) -> Path | None:
        """Move this directory's checkpoints and pointer into ``superseded-<time>/`` (for
        ``train.resume=false``): a fresh run must not resume them later, and nothing is lost."""
        files = [*self.periodic_checkpoints(), self.directory / FINAL_CHECKPOINT]
        files = [p for p in files if p.is_file()]
        pointer = self.directory / POINTER_FILE
        if not files and not pointer.exists():
            return None
        files += [self.directory / n for n in self.run_outputs if (self.directory / n).exists()]
        target = self.directory / time.strftime("superseded-%Y%m%d-%H%M%S")
        suffix = 0
        while target.exists():
            suffix += 1
            target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
        target.mkdir()
        for path in [*files, pointer] if pointer.exists() else files:
            shutil.move(str(path), target / path.name)
        return target


# ---------------------------------------------------------------------- random number generators
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (CPU) and CUDA generator states as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def _as_tuple(value: Any) -> Any:
    # random.setstate needs tuples all the way down; a serialiser may hand back lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
