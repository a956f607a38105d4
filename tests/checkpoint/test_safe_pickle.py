"""The safe reader of pickled numpy weights (Detectron2's ``.pkl``) against hostile files.

References: numpy's own pickles at every protocol (they must load, bit for bit), a list of known
code-execution gadgets (each must be refused, and must not run), and crafted files that ask for
far more memory than they hold (refused before any allocation, measured with tracemalloc).
"""

from __future__ import annotations

import collections
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from lazydet.checkpoint import CheckpointError, UnsafeCheckpointError, formats, read_checkpoint

_FRAMES = 1 << 20  # a bound on the memory a refused/accepted small file may cost


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class _Reduce:
    """Pickles as ``callable(*args)``: how a crafted file asks the unpickler to call something."""

    def __init__(self, callable_, *args) -> None:
        self.callable, self.args = callable_, args

    def __reduce__(self):
        return self.callable, self.args


# ---------------------------------------------------------------------------------------------
# The allow-list is exactly what numpy arrays need


# Every global numpy's pickles of numeric arrays use (numpy 1 writes numpy.core, numpy 2
# numpy._core; protocol 5 uses _frombuffer; protocol 2 stores bytes via _codecs.encode, and an
# empty array's b"" as __builtin__.bytes()).
_EXPECTED_ALLOWED = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


def test_allow_list_is_exactly_what_numpy_arrays_need() -> None:
    assert set(formats._ALLOWED_GLOBALS) == _EXPECTED_ALLOWED
    # None of them is the real numpy callable except OrderedDict: each is a checked stand-in.
    real = {np.ndarray, np.dtype, np.frombuffer, pickle.loads}
    assert not real.intersection(formats._ALLOWED_GLOBALS.values())


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickles_of_every_protocol_load_bit_for_bit(tmp_path: Path, protocol: int) -> None:
    arrays = {
        "f32": np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32),
        "f64_fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        "f16": np.linspace(-1, 1, 7).astype(np.float16),
        "i64": np.arange(5, dtype=np.int64),
        "u8": np.arange(6, dtype=np.uint8),
        "bool": np.array([True, False]),
        "c64": np.array([1 + 2j], dtype=np.complex64),
        "big_endian": np.arange(4, dtype=">f4"),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar_array": np.array(3.5, dtype=np.float32),
    }
    content = {
        "model": collections.OrderedDict(arrays),
        "__author__": "Detectron2 Model Zoo",
        "scale": np.float32(2.0),  # a numpy scalar (pickled with multiarray.scalar)
    }
    path = _write(tmp_path, f"p{protocol}.pkl", pickle.dumps(content, protocol=protocol))

    checkpoint = read_checkpoint(path)

    assert checkpoint.state_dict.keys() == arrays.keys()
    for name, array in arrays.items():
        tensor = checkpoint.state_dict[name]
        np.testing.assert_array_equal(tensor.numpy(), array.astype(array.dtype.newbyteorder("=")))
        assert tensor.shape == array.shape
    assert checkpoint.meta["scale"] == np.float32(2.0)


# (module, name) pairs that run code, read files or allocate at will when a pickle calls them.
_GADGETS = [
    ("numpy.testing._private.utils", "runstring"),  # exec()s its argument
    ("posix", "system"),
    ("os", "system"),
    ("nt", "system"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("builtins", "open"),
    ("builtins", "compile"),
    ("subprocess", "Popen"),
    ("subprocess", "check_output"),
    ("numpy", "load"),  # with allow_pickle=True it unpickles another file unsafely
    ("numpy.lib.npyio", "load"),
    ("numpy", "fromfile"),
    ("numpy", "memmap"),
    ("numpy", "frombuffer"),
    ("numpy.lib.stride_tricks", "as_strided"),
    ("numpy.core.multiarray", "frombuffer"),
    ("numpy.lib.format", "read_array"),
    ("torch", "load"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch.storage", "_load_from_bytes"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("copyreg", "_reconstructor"),
    ("functools", "partial"),
    ("operator", "attrgetter"),
    ("importlib", "import_module"),
    ("runpy", "run_path"),
    ("shutil", "rmtree"),
    ("pathlib", "Path"),
    ("collections", "defaultdict"),
    ("builtins", "bytes"),  # only the protocol-2 spelling __builtin__.bytes() is needed
]


def _calling(module: str, name: str, protocol: int) -> bytes:
    """A pickle that looks ``module.name`` up and calls it with no arguments."""
    if protocol == 2:  # GLOBAL opcode
        return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    # protocol 4: STACK_GLOBAL from two short strings
    parts = b"".join(b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name))
    return b"\x80\x04" + parts + b"\x93)R."


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(("module", "name"), _GADGETS)
def test_known_gadgets_are_refused(tmp_path: Path, module: str, name: str, protocol: int) -> None:
    path = _write(tmp_path, "gadget.pkl", _calling(module, name, protocol))
    with pytest.raises(UnsafeCheckpointError, match=rf"gadget\.pkl.*'{module}\.{name}'"):
        read_checkpoint(path)


def test_runstring_gadget_does_not_run(tmp_path: Path) -> None:
    # A loader that let every numpy.* global through runs this code.
    from numpy.testing._private.utils import runstring

    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    data = pickle.dumps({"model": {"w": np.zeros(2)}, "x": _Reduce(runstring, code, {})})
    path = _write(tmp_path, "runstring.pkl", data)
    with pytest.raises(UnsafeCheckpointError, match="runstring"):
        read_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# The work is bounded by the file's size


def _peak_bytes(function) -> int:
    tracemalloc.start()  # numpy reports its data allocations to tracemalloc
    try:
        function()
    except Exception:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


_GIB_F32 = (2**28,)  # 2**28 float32 = 1 GiB
_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
_frombuffer = np.ndarray.__reduce_ex__(np.zeros(1, "f4"), 5)[0]


@pytest.mark.parametrize(
    ("case", "payload", "message"),
    [
        # numpy.ndarray((2**28,), float32): a 1 GiB allocation from a ~100-byte file.
        ("ndarray_call", _Reduce(np.ndarray, _GIB_F32, np.dtype("f4")), "numpy.ndarray"),
        # A stride-0 view of 4 bytes that claims 2**28 elements: copying it allocates 1 GiB.
        (
            "stride0",
            _Reduce(np.ndarray, _GIB_F32, np.dtype("f4"), b"\0" * 4, 0, (0,)),
            "numpy.ndarray",
        ),
        # _reconstruct asked for a non-empty array (numpy itself always writes an empty one).
        ("reconstruct", _Reduce(_reconstruct, np.ndarray, _GIB_F32, b"f"), "non-empty"),
        # protocol 5's _frombuffer with a shape its bytes do not cover.
        (
            "frombuffer",
            _Reduce(_frombuffer, b"\0" * 4, np.dtype("f4"), _GIB_F32, "C"),
            "sizes disagree",
        ),
    ],
)
def test_tiny_files_asking_for_huge_arrays_are_refused_without_allocating(
    tmp_path: Path, case: str, payload: object, message: str
) -> None:
    data = pickle.dumps({"model": {"w": payload}}, protocol=4)
    assert len(data) < 300
    path = _write(tmp_path, f"{case}.pkl", data)
    with pytest.raises(UnsafeCheckpointError, match=rf"{case}\.pkl.*{message}"):
        read_checkpoint(path)
    assert _peak_bytes(lambda: read_checkpoint(path)) < _FRAMES


def test_shared_references_are_converted_once(tmp_path: Path) -> None:
    # One 400 kB array referenced by 500 names: a per-name copy would cost 200 MB.
    shared = np.arange(100_000, dtype=np.float32)
    data = pickle.dumps({"model": {f"layer{i}.weight": shared for i in range(500)}}, protocol=4)
    path = _write(tmp_path, "shared.pkl", data)

    peak = _peak_bytes(lambda: read_checkpoint(path))
    checkpoint = read_checkpoint(path)

    assert peak < 10 * len(data)
    pointers = {t.data_ptr() for t in checkpoint.state_dict.values()}
    assert len(pointers) == 1
    np.testing.assert_array_equal(checkpoint.state_dict["layer499.weight"].numpy(), shared)


def test_arrays_larger_than_the_file_are_refused(tmp_path: Path) -> None:
    # Defence in depth behind the stand-ins: the array bytes a file yields never exceed its size.
    array = np.zeros(1000, dtype=np.float32)
    with pytest.raises(UnsafeCheckpointError, match=r"x\.pkl.*describe 4000 bytes.*only 100"):
        formats.checkpoint_from_object({"w": array}, "x.pkl", max_bytes=100)


# ---------------------------------------------------------------------------------------------
# Arrays that are not numbers


def test_object_dtype_array_gives_a_clear_error(tmp_path: Path) -> None:
    data = pickle.dumps({"model": {"w": np.array([1.0, "a"], dtype=object)}}, protocol=4)
    path = _write(tmp_path, "objects.pkl", data)
    with pytest.raises(UnsafeCheckpointError, match=r"objects\.pkl.*dtype.*object"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "array", [np.array([1.0, "a"], dtype=object), np.array(["a", "b"]), np.zeros(2, "M8[s]")]
)
def test_non_numeric_arrays_in_memory_name_the_entry(array: np.ndarray) -> None:
    with pytest.raises(CheckpointError, match=r"<mem>: entry 'w' is a numpy array of dtype"):
        formats.checkpoint_from_object({"w": array}, "<mem>")


def test_structured_dtype_is_refused(tmp_path: Path) -> None:
    array = np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])
    path = _write(tmp_path, "structured.pkl", pickle.dumps({"model": {"w": array}}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"structured\.pkl.*dtype"):
        read_checkpoint(path)


def test_bytes_takes_no_arguments(tmp_path: Path) -> None:
    # bytes(2**30) would allocate 1 GiB from a few bytes of pickle.
    data = b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00@\x85R."
    path = _write(tmp_path, "bytes.pkl", data)
    with pytest.raises(UnsafeCheckpointError, match=r"bytes\.pkl.*bytes\(1073741824,\)"):
        read_checkpoint(path)
    assert _peak_bytes(lambda: read_checkpoint(path)) < _FRAMES


def test_latin1_is_the_only_codec(tmp_path: Path) -> None:
    import codecs

    data = pickle.dumps({"model": {"w": _Reduce(codecs.encode, "x" * 10, "zlib_codec")}})
    path = _write(tmp_path, "codec.pkl", data)
    with pytest.raises(UnsafeCheckpointError, match=r"codec\.pkl.*zlib_codec"):
        read_checkpoint(path)


def test_torch_zip_with_compressed_members_is_refused(tmp_path: Path) -> None:
    import zipfile

    torch.save({"w": torch.zeros(1000)}, tmp_path / "stored.pth")
    with (
        zipfile.ZipFile(tmp_path / "stored.pth") as source,
        zipfile.ZipFile(tmp_path / "deflated.pth", "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    with pytest.raises(UnsafeCheckpointError, match=r"deflated\.pth.*compressed"):
        read_checkpoint(tmp_path / "deflated.pth")
    assert read_checkpoint(tmp_path / "stored.pth").state_dict["w"].shape == (1000,)
