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
import secrets
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lazydet.checkpoint.store import fsync_directory

from .run_lock import (
    LockFileError,
    _claimed_by_this_run,
    _take_lock,
    check_run_directory_free,
    claim_run_directory,
    release_run_directory,
)

__all__ = [
    "FINAL_CHECKPOINT",
    "POINTER_FILE",
    "RUN_CONFIG_FILES",
    "Checkpointer",
    "LockFileError",
    "capture_rng_state",
    "check_run_directory_free",
    "claim_run_directory",
    "release_run_directory",
    "restore_rng_state",
]

logger = logging.getLogger(__name__)

FINAL_CHECKPOINT = "model_final.pth"
POINTER_FILE = "last_checkpoint"
# The config files a run writes beside its checkpoints (lazydet.engine.run): they describe the
# checkpoints, so train.resume=false moves them aside with them.
RUN_CONFIG_FILES = ("config.py", "config.yaml", ".hydra")
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")
# Entries a checkpoint must hold for a resume (metadata-only or weights-only files do not count).
_RESUME_KEYS = ("model", "optimizer", "iteration")


# Temporary files of save_checkpoint (".model_0000010.pth.<pid>.<hex>.tmp") and of the pointer.
_TEMPORARY = re.compile(
    r"^\.(?:(?:model_\d+|model_final)\.pth|"
    + re.escape(POINTER_FILE)
    + r")\.(\d+)\.(?:[0-9a-f]+\.)?tmp$"
)
# A pointer holds one file name; more than this is not a pointer lazydet wrote.
_POINTER_MAX_BYTES = 1024


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except OSError:
        return True  # unsure: keep the file
    return True


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
        checkpoints with ours. The kernel releases it when the process ends, even on SIGKILL.

        ``.lock`` is opened without following a symbolic link and without truncating, and must
        be a regular file with one name: a link planted there (to a file of yours elsewhere)
        is refused rather than written through. Once the lock is held, temporary files that
        killed saves of earlier (dead) processes left behind are removed.

        When the run already holds the directory (:func:`claim_run_directory`, taken by
        ``lazydet.engine.run.run`` before anything is written, in this process or in the
        process that spawned this rank), that lock is used.
        """
        try:
            import fcntl  # noqa: F401
        except ImportError:  # not POSIX: no lock, the saves stay atomic
            return
        if _claimed_by_this_run(self.directory):
            self.remove_stale_temporaries()
            return
        self._lock_file = _take_lock(self.directory)
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the temporary files (``.model_*.pth.<pid>.<hex>.tmp``,
        ``.last_checkpoint.<pid>...tmp``) of saves killed mid-write, when the process that wrote
        them is gone. A live process's file is left alone (its save may be under way)."""
        removed = []
        for path in self.directory.iterdir():
            match = _TEMPORARY.match(path.name)
            if not match:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or _process_alive(pid):
                continue
            try:
                if not stat.S_ISREG(path.lstat().st_mode):
                    continue
                path.unlink()
            except OSError:
                continue
            removed.append(path)
        if removed:
            logger.info(
                "Removed %d temporary file(s) of interrupted saves in %s: %s",
                len(removed),
                self.directory,
                ", ".join(p.name for p in removed),
            )
        return removed

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
        # Called only once the file it names is complete, fsynced and renamed into place. The
        # temporary file is new (O_EXCL, never a link followed) and replaces the pointer with
        # one rename, so a reader sees the old pointer or the new one, never a partial line.
        pointer = self.directory / POINTER_FILE
        tmp = pointer.with_name(f".{POINTER_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(name + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, pointer)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_directory(self.directory)

    def _read_pointer(self) -> Path | None:
        """The checkpoint ``last_checkpoint`` names, or None (with a warning) when the pointer
        is missing, unreadable, not UTF-8, too long, or names anything but a file here."""
        pointer = self.directory / POINTER_FILE
        try:
            fd = os.open(pointer, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            logger.warning(
                "Ignoring %s (%s); resuming from the newest checkpoint file instead.",
                pointer,
                e.strerror or e,
            )
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                problem = "is not a regular file"
            else:
                raw = os.read(fd, _POINTER_MAX_BYTES + 1)
                problem = None
        finally:
            os.close(fd)
        named = ""
        if problem is None:
            try:
                named = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                problem = "is not UTF-8 text"
        if problem is None:
            if len(raw) > _POINTER_MAX_BYTES or len(named.encode()) > 255:
                problem = f"holds a name of {len(named)} characters (longer than a file name)"
            elif not named or Path(named).name != named or named in (".", ".."):
                # Only a bare file name inside this directory is honoured (a copied run dir
                # keeps working; a pointer cannot send the resume elsewhere).
                problem = f"names {named!r}, not a checkpoint file of this directory"
            else:
                try:
                    if (self.directory / named).is_file():
                        return self.directory / named
                    problem = f"names {named!r}, which does not exist"
                except OSError as e:
                    problem = f"names {named!r} ({e.strerror or e})"
        logger.warning("%s %s; resuming from the newest checkpoint file instead.", pointer, problem)
        return None

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
        named = self._read_pointer()
        if named is not None:
            order.append(named)
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
        """Move this directory's checkpoints and pointer, with the config files that describe
        them (``RUN_CONFIG_FILES``) and the ``run_outputs``, into ``superseded-<time>/`` (for
        ``train.resume=false``): a fresh run must not resume them later, and nothing is lost.
        Call before the new run writes its own config files."""
        files = [*self.periodic_checkpoints(), self.directory / FINAL_CHECKPOINT]
        files = [p for p in files if p.is_file()]
        pointer = self.directory / POINTER_FILE
        if not files and not pointer.exists():
            return None
        owned = (*RUN_CONFIG_FILES, *self.run_outputs)
        files += [self.directory / n for n in owned if (self.directory / n).exists()]
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
