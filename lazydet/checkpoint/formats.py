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

import collections
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
    "CheckpointError",
    "CheckpointFormat",
    "SafeUnpickler",
    "UnsafeCheckpointError",
    "check_declared_tensors",
    "checkpoint_from_object",
    "read_checkpoint",
    "safe_pickle_load",
    "torch_load_file",
]

CheckpointFormat = Literal["lazydet", "torch", "detectron2"]

# torch.save's legacy (non-zip) format starts with a pickled magic number.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# numpy dtype kinds a weights file holds: bool, signed / unsigned integers, floats, complex.
# Object ("O"), string, void (structured) and datetime arrays are not weights.
_NUMERIC_KINDS = "biufc"


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: empty, truncated, corrupt, or not a checkpoint.

    The message names the file and says what to do. A ``ValueError``, so callers that caught
    ``ValueError`` keep working.
    """


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks to run code (or build objects) that a weights file never needs."""


class _Refused(Exception):
    """Raised by the allow-listed constructors; ``safe_pickle_load`` adds the file name."""


def _allowed_dtype(value: Any, what: str) -> np.dtype:
    if not isinstance(value, np.dtype):
        raise _Refused(f"{what} got a {type(value).__name__} where a numpy dtype belongs")
    if value.kind not in _NUMERIC_KINDS or value.hasobject or value.subdtype is not None:
        raise _Refused(
            f"{what} asks for numpy dtype {value!r}; a weights file holds only bool, integer, "
            "float and complex arrays (an object or structured array holds Python objects)"
        )
    return value


class _NdarrayClass:
    """Stands for ``numpy.ndarray`` in a pickle: a valid argument of ``_reconstruct``.

    Calling ``numpy.ndarray(shape, dtype, buffer, offset, strides)`` directly is how a 73-byte
    pickle asks for a 1 GiB array or a stride-0 view of 4 bytes; numpy's own pickles never call
    it, so this stand-in refuses to be called.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused(
            "the pickle calls numpy.ndarray(...) directly (numpy's pickles never do; it is how "
            "a tiny file asks for a huge or overlapping array)"
        )


_NDARRAY = _NdarrayClass()
_numpy_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
_numpy_scalar = np.float32(0).__reduce__()[0]


def _reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    # numpy writes _reconstruct(ndarray, (0,), b"b") and then fills the empty array with
    # __setstate__((version, shape, dtype, fortran, data)), which checks len(data) against the
    # shape: the array's memory comes from the file. A non-empty shape here would allocate
    # memory the file does not pay for.
    if subtype is not _NDARRAY:
        raise _Refused(f"_reconstruct of {subtype!r} (only numpy.ndarray is allowed)")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused(f"_reconstruct with shape {shape!r}")
    if int(np.prod(shape)) != 0:
        raise _Refused(
            f"_reconstruct of a non-empty array of shape {shape} (numpy writes an empty one and "
            "fills it from the file's bytes)"
        )
    if not isinstance(dtype_code, (bytes, str)) or len(dtype_code) > 8:
        raise _Refused(f"_reconstruct with dtype {dtype_code!r}")
    return _numpy_reconstruct(np.ndarray, shape, dtype_code)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    # numpy writes dtype("f4", False, True) and then sets byte order with __setstate__.
    if not isinstance(spec, str) or len(spec) > 8:
        raise _Refused(f"numpy.dtype({spec!r}) (numpy writes a short type code such as 'f4')")
    try:
        dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    except TypeError as error:
        raise _Refused(f"numpy.dtype({spec!r}): {error}") from None
    return _allowed_dtype(dtype, f"numpy.dtype({spec!r})")


def _scalar(dtype: Any, data: Any = None) -> Any:
    _allowed_dtype(dtype, "numpy scalar")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused(f"a numpy scalar of dtype {dtype} from {type(data).__name__} data")
    return _numpy_scalar(dtype, data)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> Any:
    # Pickle protocol 5 (Python 3.14's default) stores an array as _frombuffer(bytes, dtype,
    # shape, order): a view of bytes read from the file, whose size must match the shape.
    if isinstance(buf, pickle.PickleBuffer):
        buf = buf.raw().tobytes()
    if not isinstance(buf, (bytes, bytearray)):
        raise _Refused(f"_frombuffer of a {type(buf).__name__}")
    _allowed_dtype(dtype, "_frombuffer")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused(f"_frombuffer with shape {shape!r}")
    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize != len(buf):
        raise _Refused(
            f"_frombuffer of {len(buf)} bytes as shape {shape} of {dtype} (sizes disagree)"
        )
    if order not in ("C", "F", "A", "K"):
        raise _Refused(f"_frombuffer with order {order!r}")
    array = np.frombuffer(buf, dtype=dtype)
    if order == "K" and axis_order is not None:
        if sorted(axis_order) != list(range(len(shape))):
            raise _Refused(f"_frombuffer with axis order {axis_order!r}")
        return array.reshape(shape, order="C").transpose(axis_order)
    return array.reshape(shape, order=order)


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _ordered_dict(*args: Any, **kwargs: Any) -> collections.OrderedDict:
    # Python 3 pickles an OrderedDict as OrderedDict() followed by SETITEMS (each item paid for
    # by the file's bytes); Python 2 passed its items as one list of [key, value] pairs.
    if kwargs or len(args) > 1:
        raise _Refused("collections.OrderedDict with keyword or several arguments")
    if args and not isinstance(args[0], (list, tuple)):
        raise _Refused(
            f"collections.OrderedDict({type(args[0]).__name__}) (pickles pass a list of pairs)"
        )
    return collections.OrderedDict(*args)


class _CopyBudget:
    """What the constructors that copy (``_codecs.encode``, ``OrderedDict(items)``) may build.

    A pickle can reference one object many times for two bytes each (the memo), so a
    constructor that copies its argument would turn a small file into a large allocation (a
    2.6 MB file asking ~200 GiB by encoding one string 80,000 times). numpy's own pickles copy
    each array's data once, so the bytes encoded and the items copied, summed over the whole
    file, never exceed the file's size: that is the budget, checked *before* each copy.
    """

    def __init__(self, file_size: int) -> None:
        self.left = file_size

    def charge(self, amount: int, what: str) -> None:
        if amount > self.left:
            raise _Refused(
                f"{what} would copy more than the file holds (the file reuses one object to "
                "ask for memory it does not contain)"
            )
        self.left -= amount

    def encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        if isinstance(text, str):
            self.charge(len(text), "_codecs.encode")
        return _latin1_encode(text, encoding)

    def ordered_dict(self, *args: Any, **kwargs: Any) -> collections.OrderedDict:
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            # A dict entry costs about 8 pointers: charge that, not just the item count.
            self.charge(64 * len(args[0]), "collections.OrderedDict(items)")
        return _ordered_dict(*args, **kwargs)


def _empty_bytes(*args: Any) -> bytes:
    # Protocol-2 pickles written by Python 3 store b"" (the data of an empty array) as bytes().
    # Any argument would let a file allocate at will (bytes(2**30)).
    if args:
        raise _Refused(f"bytes{args!r} (only bytes() of nothing occurs in numpy pickles)")
    return b""


# Exactly the globals that rebuilding numpy arrays in plain containers needs, each bound to a
# checked stand-in that allocates nothing the file's bytes do not pay for. numpy 2 renamed
# numpy.core to numpy._core; pickles written with either name occur in the wild.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "scalar")] = _scalar
    _ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _frombuffer


def _bytes_left(file: Any) -> int:
    try:
        here = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(here)
        return max(0, end - here)
    except (OSError, AttributeError, ValueError):  # not seekable: no copying constructor
        return 0


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only builds numpy arrays, dtypes and plain containers.

    Unpickling calls whatever global function a pickle names; refusing every global outside a
    short allow-list (see ``_ALLOWED_GLOBALS``) means a malicious ``.pkl`` cannot run code, and
    the allowed constructors are checked stand-ins, so every array's memory comes from the
    file's own bytes, and what the copying ones (``_codecs.encode``, ``OrderedDict(items)``)
    build is capped by the file's size (a small file cannot ask for a large allocation). The error names the
    refused global so a user can see what the file asked for.
    """

    def __init__(
        self, file: io.BufferedIOBase, *, source: str, copy_budget: int | None = None
    ) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles of numpy arrays
        self._source = source
        if copy_budget is None:  # the bytes left in the file bound what may be copied
            copy_budget = _bytes_left(file)
        self._budget = _CopyBudget(copy_budget)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return self._budget.encode
        if (module, name) == ("collections", "OrderedDict"):
            return self._budget.ordered_dict
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
    try:
        return SafeUnpickler(io.BytesIO(data), source=source).load()
    except _Refused as error:
        raise UnsafeCheckpointError(
            f"{source}: refused: {error}. Only plain pickles of numeric numpy arrays are read; "
            "if you trust this file, convert it yourself to a state dict of tensors saved "
            "with torch.save."
        ) from None


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
        if value.dtype.kind not in _NUMERIC_KINDS or value.dtype.hasobject:
            raise CheckpointError(
                f"{source}: entry {key!r} is a numpy array of dtype {value.dtype} (not numbers); "
                "a weights file holds bool, integer, float or complex arrays only."
            )
        if not value.dtype.isnative:  # torch only takes the machine's byte order
            return torch.from_numpy(value.astype(value.dtype.newbyteorder("=")))
        # Copy: arrays from a pickle may be read-only, and tensors must own their memory.
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(value)
    raise CheckpointError(
        f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor or numpy array; "
        "this is not a weights file."
    )


# Resume state a trainer stores beside the model: never weights, and possibly large.
_RESUME_KEYS = ("optimizer", "scheduler", "lr_scheduler", "grad_scaler", "scaler")


def _state_dict_from(obj: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a loaded object into (state dict, meta)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source}: expected a dict of weights, found a {type(obj).__name__}. lazydet reads "
            "lazydet checkpoints, torchvision .pth state dicts and Detectron2 .pkl files."
        )
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            meta = {k: v for k, v in obj.items() if k != key and k not in _RESUME_KEYS}
            return dict(obj[key]), meta
    return dict(obj), {}


def _is_lazydet(meta: Mapping[str, Any]) -> bool:
    # Early lazydet checkpoints stored the version at the top level; now it is in "metadata".
    metadata = meta.get("metadata")
    return "lazydet_version" in meta or (
        isinstance(metadata, Mapping) and "lazydet_version" in metadata
    )


def checkpoint_from_object(
    obj: Any,
    source: str,
    default_format: CheckpointFormat = "torch",
    *,
    max_bytes: int | None = None,
) -> Checkpoint:
    """A ``Checkpoint`` from an already loaded object: a state dict (tensors or numpy arrays) or
    a dict holding one under ``"model"`` / ``"state_dict"``; ``source`` names it in errors.

    A numpy array that several names share (a pickle may reference one array many times) is
    converted once and the tensors share it. ``max_bytes`` (the size of the file the object was
    read from) bounds the bytes of numpy arrays converted: a file cannot ask for more memory than
    it holds.
    """
    raw, meta = _state_dict_from(obj, source)
    if not raw:
        raise CheckpointError(f"{source}: the checkpoint holds no weights (an empty state dict).")
    if max_bytes is not None:
        arrays = {id(v): v for v in raw.values() if isinstance(v, np.ndarray)}
        total = sum(int(a.nbytes) for a in arrays.values())
        if total > max_bytes:
            raise UnsafeCheckpointError(
                f"{source}: its arrays describe {total} bytes but the file holds only "
                f"{max_bytes}; it was crafted or is corrupt, and was not loaded."
            )
    converted: dict[int, torch.Tensor] = {}
    state_dict = {}
    for k, v in raw.items():
        if isinstance(v, np.ndarray) and id(v) in converted:
            state_dict[str(k)] = converted[id(v)]
            continue
        tensor = _to_tensor(v, str(k), source)
        if isinstance(v, np.ndarray):
            converted[id(v)] = tensor
        state_dict[str(k)] = tensor
    fmt: CheckpointFormat = "lazydet" if _is_lazydet(meta) else default_format
    return Checkpoint(state_dict=state_dict, format=fmt, source=source, meta=meta)


def weights_only_refusal(error: BaseException) -> str:
    """The informative line of ``torch.load(weights_only=True)``'s refusal (it names the global)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error" in line or "Unsupported global" in line:
            return line.split(" Please use ")[0]
    return lines[0] if lines else type(error).__name__


# A torch.save file stores every storage once, so the tensors it declares hold at most its own
# size; names sharing one storage (tied weights) may count it twice. Beyond this multiple of the
# file's size the file declares memory it does not hold (views that a copy would materialise).
DECLARED_BYTES_MULTIPLE = 4


def _has_internal_overlap(tensor: torch.Tensor) -> bool:
    """Whether two indices of ``tensor`` address the same element (a stride 0 of ``expand``, or
    strides smaller than the extent of the dimensions inside them).

    Sorted by stride, a layout is free of overlap when each stride exceeds the furthest element
    the smaller-strided dimensions reach; this accepts every contiguous and permuted tensor.
    """
    dims = sorted((stride, size) for size, stride in zip(tensor.shape, tensor.stride()) if size > 1)
    reach = 0
    for stride, size in dims:
        if stride <= reach:
            return True
        reach += stride * (size - 1)
    return False


def check_declared_tensors(obj: Any, source: str, *, max_bytes: int | None = None) -> None:
    """Refuse a loaded checkpoint whose tensors are overlapping views or declare too much memory.

    A stride-0 (``expand``-ed) or overlapping tensor costs its storage on disk but its full
    size as soon as anything copies it (``flip``, indexing, ``isfinite``, a dtype cast): a 39 KB
    file can so become 4 GiB inside a name converter. ``max_bytes`` bounds the sum of the
    tensors' sizes (``DECLARED_BYTES_MULTIPLE`` times the file's size for a file).

    Raises:
        UnsafeCheckpointError: naming the first such tensor, or the total and the bound.
    """
    total = 0
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:  # iterative: a crafted file may nest containers deeper than the recursion limit
        where, value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                continue
            if _has_internal_overlap(value):
                raise UnsafeCheckpointError(
                    f"{source}: tensor {where or '<root>'} of shape {tuple(value.shape)} has "
                    f"strides {tuple(value.stride())}, so its elements overlap (an expanded or "
                    "crafted view: copying it would take far more memory than the file holds); "
                    "it was not loaded. Re-save it with tensor.contiguous()."
                )
            total += value.numel() * value.element_size()
        elif isinstance(value, Mapping):
            stack.extend((f"{where}[{k!r}]", v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    if max_bytes is not None and total > max_bytes:
        raise UnsafeCheckpointError(
            f"{source}: its tensors declare {total} bytes, more than {DECLARED_BYTES_MULTIPLE} "
            f"times the file's size allows ({max_bytes} bytes): views of shared storage that a "
            "copy would materialise. It was crafted or is corrupt, and was not loaded."
        )


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{what}: {path} is a directory, not a checkpoint file.")
    if not path.exists():
        raise FileNotFoundError(f"{what}: checkpoint {path} does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what}: {path} is empty (0 bytes): truncated or corrupt.")


def torch_load_file(path: Path, *, what: str, mmap: bool = False, verify: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error per failure, naming the file.

    ``what`` names the caller in messages (``"load_checkpoint"``). Distinguishes a truncated or
    corrupt zip (a ``torch.save`` file cut short: starts like a zip but its directory is gone or a
    member is damaged) from a file that is not a checkpoint at all. ``verify`` checks every zip
    member's CRC first: torch.load itself does not, so bytes changed on disk or in a copy would
    load as silently wrong weights (costs one extra read of the file, usually from the page cache).
    """
    _check_file(path, what)
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{what}: {path} is truncated or corrupt (it starts like a torch.save zip file "
                "but its end is missing, e.g. a copy or a save that was interrupted). Use an "
                "earlier checkpoint or copy the file again."
            )
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
        names = [member.filename for member in members]
        compressed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
        if compressed:
            # torch.save stores members uncompressed; a compressed one can expand far beyond the
            # file's size (a zip bomb), so the work would no longer be bounded by the file.
            raise UnsafeCheckpointError(
                f"{what}: {path} has compressed members ({compressed[:3]}), which torch.save "
                "never writes; it was repacked or crafted and was not loaded. Re-save it with "
                "torch.save."
            )
        if verify:
            try:
                with zipfile.ZipFile(path) as archive:
                    damaged = archive.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                damaged = f"? ({error})"
            if damaged is not None:
                raise CheckpointError(
                    f"{what}: {path} is truncated or corrupt: member {damaged} fails its CRC "
                    "check (bytes changed on disk or in a copy). Use an earlier checkpoint or "
                    "copy the file again."
                )
        if not any(name.endswith("data.pkl") for name in names):
            raise CheckpointError(
                f"{what}: {path} is not a checkpoint: a zip file without data.pkl (not written by "
                f"torch.save); it holds {names[:5]}."
            )
    elif not head.startswith(b"\x80"):
        raise CheckpointError(
            f"{what}: {path} is not a checkpoint (neither a torch.save zip file nor a pickle); "
            f"it starts with {head!r}."
        )
    try:
        loaded = torch.load(
            path, map_location="cpu", weights_only=True, mmap=mmap and head == b"PK\x03\x04"
        )
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"{what}: {path}: torch.load(weights_only=True) refused it: it stores objects other "
            f"than tensors and plain containers ({weights_only_refusal(error)}). lazydet does not "
            "run code from checkpoints; re-save only the state dict: "
            "torch.save(checkpoint['model'], 'weights.pth')."
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"{what}: {path} is truncated or corrupt and cannot be read as a torch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
        ) from error
    check_declared_tensors(
        loaded, f"{what}: {path}", max_bytes=DECLARED_BYTES_MULTIPLE * path.stat().st_size
    )
    return loaded


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file (see the module docstring for the recognised kinds).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        UnsafeCheckpointError: the file would need to run code, or more memory than it holds,
            to load.
        CheckpointError (a ValueError): the file is empty, truncated, corrupt, or holds
            something other than weights.
    """
    path = Path(path)
    _check_file(path, "read_checkpoint")
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(b"PK"):  # torch.save's default format since torch 1.6
        return checkpoint_from_object(torch_load_file(path, what="read_checkpoint"), str(path))

    data = path.read_bytes()
    if not data.startswith(b"\x80"):
        raise CheckpointError(
            f"{path}: not a checkpoint (neither a torch.save zip file nor a pickle); "
            f"it starts with {data[:16]!r}."
        )
    try:
        obj = safe_pickle_load(data, source=str(path))
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # a broken pickle can fail in many ways
        raise CheckpointError(
            f"{path}: the pickle is truncated or corrupt ({type(error).__name__}: {error})."
        ) from error
    if obj == _TORCH_LEGACY_MAGIC:  # torch.save(..., _use_new_zipfile_serialization=False)
        legacy = torch_load_file(path, what="read_checkpoint")
        return checkpoint_from_object(legacy, str(path))
    return checkpoint_from_object(obj, str(path), "detectron2", max_bytes=len(data))
