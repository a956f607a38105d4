"""Writing and reading lazydet's own checkpoints: ``save_checkpoint`` / ``load_checkpoint``.

A lazydet checkpoint is a ``torch.save`` file of a dict with at least ``"model"`` (a state dict)
and ``"metadata"`` (``build_metadata``: class names, input format, config, lazydet version). The
trainer adds its resume state (``"optimizer"``, ``"scheduler"``, ``"iteration"``, ...). Only
tensors and plain containers are stored, so the file is read back with
``torch.load(weights_only=True)``: loading a checkpoint never runs code.

Writes are atomic: a crash, a full disk or a kill mid-write leaves the previous file intact and no
half-written file under the final name (what a resume after a preemption relies on).
"""

from __future__ import annotations

import errno
import os
import pickle
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lazydet.checkpoint.formats import CheckpointError, torch_load_file, weights_only_refusal

__all__ = ["load_checkpoint", "save_checkpoint"]

# Leaf types torch.load(weights_only=True) rebuilds; used only to name the offending key when a
# payload turns out not to be loadable (torch's own check is the authority, see save_checkpoint).
# Exact types for the Python scalars: numpy.float64 subclasses float, and torch refuses it.
_TORCH_LEAVES = (torch.Tensor, torch.dtype, torch.device)
_PLAIN_SCALARS = (int, float, bool, complex, str, bytes)


def fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (best effort where a directory cannot be
    opened)."""
    # The rename is durable only once the directory entry is on disk. Not possible on every OS
    # (Windows cannot open a directory); there os.replace is the best we can do.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _first_unloadable(value: Any, where: str) -> str | None:
    """The key path of the first value that is not a tensor or a plain container, or None."""
    if value is None or isinstance(value, _TORCH_LEAVES) or type(value) in _PLAIN_SCALARS:
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _first_unloadable(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            found = _first_unloadable(item, f"{where}[{index}]")
            if found:
                return found
        return None
    return f"{where} (a {type(value).__module__}.{type(value).__qualname__})"


def _write_error(error: RuntimeError, tmp: Path) -> BaseException:
    """The ``OSError`` behind a failed ``torch.save`` write, or ``error`` itself.

    torch's zip writer turns a failed write (a full disk, a quota, an I/O error) into
    ``RuntimeError("[enforce fail at inline_container.cc:...] unexpected pos ...")`` or
    "... file write failed": the errno is lost, so a full disk is recognised by the free space
    left. Callers handle one ``OSError`` for every failed write.
    """
    text = str(error)
    if "inline_container" not in text and "write" not in text.lower():
        return error
    try:
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        free = None
    full = free is not None and free < _NEARLY_FULL_BYTES
    reason = "No space left on device" if full else "write failed"
    return OSError(
        errno.ENOSPC if full else errno.EIO,
        f"{reason} (torch.save: {text.splitlines()[0] if text else 'RuntimeError'})",
        str(tmp),
    )


# torch.save loses the errno of a failed write; with less free space than this the failure is
# reported as a full disk.
_NEARLY_FULL_BYTES = 64 << 20


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically with ``torch.save``.

    The payload is written to a temporary file in the same directory, flushed and fsynced, checked
    to load with ``torch.load(weights_only=True)`` (so ``load_checkpoint`` will read it), renamed
    over ``path`` with ``os.replace`` (atomic on POSIX and Windows), and the directory is fsynced.
    Missing parent directories are created. Two processes saving the same path at once each write
    their own temporary file; the last rename wins and the file is always complete.

    Args:
        path: the checkpoint file (conventionally ``*.pth``); not a directory.
        payload: a dict with at least ``"model"`` (a state dict) and, for checkpoints a predictor
            can use alone, ``"metadata"`` (``build_metadata(...)``); values must be tensors and
            plain containers (dict, list, tuple, str, numbers, None).

    Raises:
        IsADirectoryError: ``path`` is a directory.
        TypeError: ``payload`` is not a dict, or has no ``"model"`` state dict.
        CheckpointError: the payload holds objects ``torch.load(weights_only=True)`` refuses
            (the message names the key); nothing is written.
        OSError: the write failed (disk full, permissions; torch.save's ``RuntimeError`` for a
            failed write is raised as ``OSError`` too); ``path`` is left as it was.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise TypeError(
            f"save_checkpoint({str(path)!r}, payload): payload must be a dict such as "
            f"{{'model': model.state_dict(), 'metadata': build_metadata(...)}}, "
            f"got {type(payload).__name__}."
        )
    if not isinstance(payload.get("model"), Mapping):
        raise TypeError(
            f"save_checkpoint({str(path)!r}, payload): payload['model'] must be the model's "
            f"state dict (model.state_dict()); the payload has keys {sorted(map(str, payload))}."
        )
    if path.is_dir():
        raise IsADirectoryError(
            f"save_checkpoint: {path} is a directory; give a file name inside it, "
            f"e.g. {path / 'model_final.pth'}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name per writer (two processes may save the same path at once). os.open with mode
    # 0o666 honours the umask, as a plain open() would; mkstemp's 0o600 would make checkpoints in
    # a shared directory unreadable to the rest of a team.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            try:
                torch.save(payload, file)
            except RuntimeError as error:
                raise _write_error(error, tmp) from error
            file.flush()
            os.fsync(file.fileno())
        try:
            # mmap: only the pickled structure is read, not the tensor data.
            torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as error:
            culprit = _first_unloadable(payload, "payload")
            raise CheckpointError(
                f"save_checkpoint({str(path)!r}): the payload holds an object that "
                f"torch.load(weights_only=True) refuses"
                + (f": {culprit}" if culprit else "")
                + f" ({weights_only_refusal(error)}). Store tensors and plain containers only "
                "(convert numpy values with float()/int()/torch.as_tensor()). Nothing was written."
            ) from error
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a lazydet checkpoint written by ``save_checkpoint`` (tensors land on the CPU).

    Returns:
        The saved dict: ``"model"``, ``"metadata"`` and whatever the writer added
        (``"optimizer"``, ``"scheduler"``, ``"iteration"``, ...).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        CheckpointError: the file is empty, truncated or corrupt ("truncated or corrupt"), or it
            is not a lazydet checkpoint ("not a checkpoint"; e.g. a bare state dict: initialise
            a model from one with ``load_weights``).
        UnsafeCheckpointError: the file holds objects that would need code to run to load.
    """
    path = Path(path)
    payload = torch_load_file(path, what="load_checkpoint")
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), Mapping):
        found = (
            f"a dict with keys {sorted(map(str, payload))[:8]}"
            if isinstance(payload, dict)
            else f"a {type(payload).__name__}"
        )
        raise CheckpointError(
            f"load_checkpoint: {path} is not a checkpoint written by lazydet (expected a dict "
            f"with a 'model' state dict, found {found}). To initialise a model from other "
            "weights (torchvision, Detectron2, a bare state dict), use "
            "lazydet.checkpoint.load_weights(model, path)."
        )
    return payload
