"""The run directory's lock: one training run per directory, taken before anything is written.

``.lock`` in the run directory holds an exclusive ``flock`` for as long as a run trains there
(the kernel drops it when the process ends, even on SIGKILL) and one line, ``pid N``, naming the
holder. It is opened without following a symbolic link and without truncating, and must be a
regular file with one name. Kept free of torch so that the command line can try it in
milliseconds, before Hydra writes anything into the directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Any

from lazydet.config.errors import ConfigError

__all__ = [
    "RUN_LOCK_ENV",
    "LockFileError",
    "RunRefused",
    "check_run_directory_free",
    "claim_run_directory",
    "release_run_directory",
]


class RunRefused(ConfigError):
    """The run will not start in this directory with this config, and wrote nothing: a resume
    into a run of another model, a ``schedule.max_iter`` below its checkpoint, an empty run
    directory, a device this machine cannot use. ``lazydet.train`` exits 2 with the message."""


class LockFileError(OSError):
    """The run directory's ``.lock`` is a link or not a plain file lazydet can own."""


# Set by claim_run_directory for the processes a run spawns (its ranks): "<pid> <directory>".
RUN_LOCK_ENV = "LAZYDET_RUN_DIRECTORY_LOCKED_BY"
# Directories this process holds for its run (claim_run_directory): resolved path -> lock file.
_CLAIMED: dict[Path, Any] = {}


def _open_lock_file(path: Path, *, create: bool) -> int | None:
    """An fd on the run directory's ``.lock`` (no link followed, no truncation), checked to be a
    regular file with one name; None when ``create`` is false and there is none."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise LockFileError(
                f"The run directory's lock file {path} is a symbolic link (to "
                f"{os.readlink(path)!r}); lazydet does not follow it, since writing the "
                "lock would write to that file. Remove the link and run again."
            ) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = (
            "is not a regular file"
            if not stat.S_ISREG(info.st_mode)
            else (f"has {info.st_nlink} names (a hard link to another file)")
        )
        raise LockFileError(
            f"The run directory's lock file {path} {what}; lazydet writes only a lock file "
            "it owns. Remove it and run again."
        )
    os.set_blocking(fd, True)
    return fd


def _in_use(directory: Path, holder: str) -> str:
    return (
        f"The run directory {directory} is in use by a training process ({holder}). Wait for "
        "it to finish, stop it (Ctrl-C saves and exits), or choose another directory with "
        "hydra.run.dir=DIR."
    )


def _take_lock(directory: Path) -> Any:
    """Lock ``directory/.lock`` (exclusive, non-blocking) and write ``pid N`` into it; return
    the open file (closing it releases the lock). Raises BlockingIOError when it is held."""
    import fcntl

    fd = _open_lock_file(directory / ".lock", create=True)
    file = os.fdopen(fd, "r+", encoding="utf-8", errors="replace")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        file.seek(0)
        holder = file.read(200).strip() or "another process"
        file.close()
        raise BlockingIOError(e.errno, _in_use(directory, holder)) from None
    # Ours alone now (a regular file with one name, locked): rewrite the holder line.
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()}\n")
    file.flush()
    return file


def check_run_directory_free(directory: str | os.PathLike) -> None:
    """Raise BlockingIOError (naming the holder) when a live process holds ``directory``'s lock.

    Writes nothing: a missing ``.lock`` means free, an existing one is opened without creating,
    truncating or following a link, tried with a non-blocking ``flock`` and released at once.
    For the command line, before Hydra writes anything into the directory.
    """
    try:
        import fcntl
    except ImportError:
        return
    directory = Path(directory)
    fd = _open_lock_file(directory / ".lock", create=False)
    if fd is None:
        return
    with os.fdopen(fd, "r+", encoding="utf-8", errors="replace") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = file.read(200).strip() or "another process"
            raise BlockingIOError(e.errno, _in_use(directory, holder)) from None
        fcntl.flock(file, fcntl.LOCK_UN)


def claim_run_directory(directory: str | os.PathLike) -> None:
    """Take ``directory``'s lock for this run, before anything else is written into it; held
    until :func:`release_run_directory` or the end of the process. Ranks this process spawns
    (and the run's own :class:`Checkpointer`) use it rather than locking again."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # not POSIX: no lock, the saves stay atomic
        return
    key = Path(directory).resolve()
    if key in _CLAIMED:
        return
    _CLAIMED[key] = _take_lock(Path(directory))
    os.environ[RUN_LOCK_ENV] = f"{os.getpid()} {key}"


def release_run_directory(directory: str | os.PathLike) -> None:
    file = _CLAIMED.pop(Path(directory).resolve(), None)
    if file is not None:
        with contextlib.suppress(OSError):
            file.close()
        if os.environ.get(RUN_LOCK_ENV, "").startswith(f"{os.getpid()} "):
            del os.environ[RUN_LOCK_ENV]


def _claimed_by_this_run(directory: Path) -> bool:
    key = directory.resolve()
    if key in _CLAIMED:
        return True
    # A rank spawned by the process that claimed the directory (lazydet.engine.launch).
    pid, _, claimed = os.environ.get(RUN_LOCK_ENV, "").partition(" ")
    return bool(claimed) and Path(claimed) == key and pid == str(os.getppid())
