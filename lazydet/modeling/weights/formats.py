"""Read a checkpoint file into a flat ``{name: Tensor}`` state dict, without running its code.

Three kinds of files are recognised by their content (not their extension):

``lazydet``
    ``torch.save({"model": state_dict, "lazydet_version": "...", ...})``.
``torch``
    Any other ``torch.save`` file holding tensors: a bare state dict (torchvision's detection and
    ImageNet checkpoints), or a dict with a ``"model"`` / ``"state_dict"`` entry holding one.
    It is read with ``torch.load(weights_only=True)``, which refuses arbitrary objects.
``detectron2``
    A pickle (Detectron2's model-zoo ``.pkl``): ``{"model": {name: numpy.ndarray}, "__author__":
    ..., "matching_heuristics": ...}``. It is read by ``SafeUnpickler``, which only reconstructs
    numpy arrays and plain containers: a pickle naming any other global (the way a pickle runs
    code) is refused with an error that names it.

Every error names the file and says what was expected.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "Checkpoint",
    "CheckpointFormat",
    "SafeUnpickler",
    "UnsafeCheckpointError",
    "checkpoint_from_object",
    "read_checkpoint",
    "safe_pickle_load",
]

CheckpointFormat = Literal["lazydet", "torch", "detectron2"]

# torch.save's legacy (non-zip) format starts with a pickled magic number.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# The globals a pickle of numpy arrays in plain containers needs, and nothing else. numpy 2
# renamed numpy.core to numpy._core; pickles written by either name both occur in the wild.
# `_codecs.encode` is how protocol-2 pickles written by Python 3 store bytes (the array data).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_module, "_reconstruct")] = np.ndarray.__reduce__(np.zeros(1))[0]
    _ALLOWED_GLOBALS[(_module, "scalar")] = np.float32(0).__reduce__()[0]
# numpy >= 1.25 pickles dtypes as numpy.dtypes.Float32DType etc.
for _dtype_class in ("Float16DType", "Float32DType", "Float64DType", "Int32DType", "Int64DType",
                     "UInt8DType", "Int8DType", "BoolDType"):  # fmt: skip
    if hasattr(np, "dtypes") and hasattr(np.dtypes, _dtype_class):
        _ALLOWED_GLOBALS[("numpy.dtypes", _dtype_class)] = getattr(np.dtypes, _dtype_class)


class UnsafeCheckpointError(ValueError):
    """A checkpoint asks to run code (or build objects) that a weights file never needs."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only builds numpy arrays, dtypes and plain containers.

    Unpickling calls whatever global function a pickle names; refusing every global outside a
    short allow-list (see ``_ALLOWED_GLOBALS``) means a malicious ``.pkl`` cannot run code. The
    error names the refused global so a user can see what the file asked for.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles of numpy arrays
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeCheckpointError(
                f"{self._source}: the pickle refers to the global '{module}.{name}', which a "
                "weights file does not need (only numpy arrays and plain containers are allowed), "
                "so it was not loaded. If you trust this file, convert it yourself to a state "
                "dict of tensors saved with torch.save."
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(
            f"{self._source}: the pickle uses persistent ids ({pid!r}), as torch.save files do; "
            "it is not a plain pickle of numpy arrays."
        )


def safe_pickle_load(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with ``SafeUnpickler``; ``source`` names the data in errors."""
    return SafeUnpickler(io.BytesIO(data), source=source).load()


@dataclass
class Checkpoint:
    """A checkpoint read from disk.

    Attributes:
        state_dict: ``{name: Tensor}`` on CPU, with the names used in the file.
        format: ``"lazydet"``, ``"torch"`` or ``"detectron2"`` (see the module docstring).
        source: the file it came from (or a description of an in-memory dict).
        meta: the other top-level entries of the file (e.g. ``lazydet_version``,
            ``__author__``, ``matching_heuristics``), excluding optimizer state.
    """

    state_dict: dict[str, torch.Tensor]
    format: CheckpointFormat
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def _to_tensor(value: Any, key: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        # Copy: arrays from a pickle may be read-only, and tensors must own their memory.
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(value)
    raise ValueError(
        f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor or numpy array; "
        "this is not a weights file."
    )


def _state_dict_from(obj: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a loaded object into (state dict, meta)."""
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{source}: expected a dict of weights, found a {type(obj).__name__}. lazydet reads "
            "lazydet checkpoints, torchvision .pth state dicts and Detectron2 .pkl files."
        )
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            meta = {
                k: v
                for k, v in obj.items()
                if k != key and k not in ("optimizer", "scheduler", "lr_scheduler")
            }
            return dict(obj[key]), meta
    return dict(obj), {}


def checkpoint_from_object(
    obj: Any, source: str, default_format: CheckpointFormat = "torch"
) -> Checkpoint:
    """A ``Checkpoint`` from an already loaded object: a state dict (tensors or numpy arrays) or
    a dict holding one under ``"model"`` / ``"state_dict"``; ``source`` names it in errors."""
    raw, meta = _state_dict_from(obj, source)
    if not raw:
        raise ValueError(f"{source}: the checkpoint holds no weights (an empty state dict).")
    state_dict = {str(k): _to_tensor(v, str(k), source) for k, v in raw.items()}
    fmt: CheckpointFormat = "lazydet" if "lazydet_version" in meta else default_format
    return Checkpoint(state_dict=state_dict, format=fmt, source=source, meta=meta)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"{path}: torch.load(weights_only=True) refused it: it stores objects other than "
            f"tensors and plain containers ({str(error).splitlines()[0]}). lazydet does not run "
            "code from checkpoints; re-save only the state dict: "
            "torch.save(checkpoint['model'], 'weights.pth')."
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise ValueError(
            f"{path}: the file is corrupt or truncated and cannot be read as a torch checkpoint "
            f"({type(error).__name__}: {error})."
        ) from error


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file (see the module docstring for the recognised kinds).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the file would need to run code to load.
        ValueError: the file is empty, corrupt, or holds something other than weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist (or is not a file).")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty.")
    if zipfile.is_zipfile(path):  # torch.save's default format since torch 1.6
        return checkpoint_from_object(_torch_load(path), str(path), "torch")

    data = path.read_bytes()
    if not data.startswith(b"\x80"):
        raise ValueError(
            f"{path}: not a checkpoint (neither a torch.save zip file nor a pickle); "
            f"it starts with {data[:16]!r}."
        )
    try:
        obj = safe_pickle_load(data, source=str(path))
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # a broken pickle can fail in many ways
        raise ValueError(
            f"{path}: the pickle is corrupt or truncated ({type(error).__name__}: {error})."
        ) from error
    if obj == _TORCH_LEGACY_MAGIC:  # torch.save(..., _use_new_zipfile_serialization=False)
        return checkpoint_from_object(_torch_load(path), str(path), "torch")
    return checkpoint_from_object(obj, str(path), "detectron2")
