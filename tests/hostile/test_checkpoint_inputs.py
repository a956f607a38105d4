"""Crafted checkpoint inputs (issue #22): each case is a file a user may be handed, and each
must be refused with one clear error, or read as data, without running code, amplifying memory
or writing outside the run's own files.

Surfaces: pickled weights (``.pkl``), ``torch.save`` weights (``.pth``), the config stored in a
checkpoint's metadata, and the files of a run directory (``.lock``, ``last_checkpoint``).
"""

from __future__ import annotations

import codecs
import collections
import logging
import os
import pickle
import tracemalloc
from pathlib import Path

import pytest
import torch

from lazydet.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    build_metadata,
    config_from_metadata,
    read_checkpoint,
    read_metadata,
    save_checkpoint,
)
from lazydet.config import LazyCall as L
from lazydet.engine.checkpointer import POINTER_FILE, Checkpointer, LockFileError


class _Reduce:
    """Pickles as ``callable(*args)``: how a crafted file asks the unpickler to call something."""

    def __init__(self, callable_, *args) -> None:
        self.callable, self.args = callable_, args

    def __reduce__(self):
        return self.callable, self.args


# ---------------------------------------------------------------------------------------------
# Pickles that reuse one object (two bytes per reference) to make a copying constructor allocate


def _ordered_dict_amplifier() -> bytes:
    # One list of 20,000 pairs, passed to OrderedDict 100 times: ~0.2 MB of file, ~200 MB of
    # dicts if each call copies it.
    items = [(i, i) for i in range(20_000)]
    return pickle.dumps({"model": [_Reduce(collections.OrderedDict, items) for _ in range(100)]}, 2)


def _codecs_encode_amplifier() -> bytes:
    # One 1 MB string, encoded 200 times: ~1 MB of file, ~200 MB of bytes if each call copies.
    text = "a" * (1 << 20)
    return pickle.dumps({"model": [_Reduce(codecs.encode, text, "latin1") for _ in range(200)]}, 2)


@pytest.mark.parametrize(
    "make", [_ordered_dict_amplifier, _codecs_encode_amplifier], ids=["OrderedDict", "encode"]
)
def test_pickle_copying_constructors_cannot_amplify_memory(tmp_path: Path, make) -> None:
    data = make()
    path = tmp_path / "weights.pkl"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeCheckpointError, match=r"weights.pkl.*copy more than the file"):
            read_checkpoint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Reading the file plus the containers it pays for (a pickled tuple of two ints is ~10
    # bytes on disk, ~70 in memory: plain pickles never copy, so this stays bounded); copying
    # the shared object 100-200 times would cost 100x the file.
    assert peak < 16 * len(data) + (2 << 20), (peak, len(data))


def test_python2_ordered_dict_of_arrays_still_loads(tmp_path: Path) -> None:
    # Python 2 pickled OrderedDict(items); a real weights file pays for its items many times.
    import numpy as np

    weights = {f"layer{i}.weight": np.full((4, 4), i, dtype=np.float32) for i in range(3)}
    data = pickle.dumps({"model": _Reduce(collections.OrderedDict, list(weights.items()))}, 2)
    path = tmp_path / "py2.pkl"
    path.write_bytes(data)
    checkpoint = read_checkpoint(path)
    assert sorted(checkpoint.state_dict) == sorted(weights)
    assert checkpoint.state_dict["layer2.weight"].eq(2).all()


# ---------------------------------------------------------------------------------------------
# torch.save files whose tensors are views declaring more memory than the file holds

_TORCHVISION_STEM = "backbone.body.conv1.weight"
_DETECTRON2_STEM = "backbone.bottom_up.stem.conv1.weight"


def _stride0(name: str) -> dict:
    return {name: torch.zeros(1).expand(4096, 3, 7, 7)}  # 2.4 MB declared by 4 bytes


def _overlapping(name: str) -> dict:
    storage = torch.zeros(4096 + 146)
    return {name: storage.as_strided((4096, 3, 7, 7), (1, 49, 7, 1))}  # rows overlap


def _many_names_one_storage(name: str) -> dict:
    shared = torch.zeros(64, 3, 7, 7)
    return {f"{name}.{i}": shared.view(64, 3, 7, 7) for i in range(200)}


@pytest.mark.parametrize("name", [_TORCHVISION_STEM, _DETECTRON2_STEM], ids=["tv", "d2"])
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_stride0, r"strides \(0, 0, 0, 0\).*elements overlap"),
        (_overlapping, r"elements overlap"),
        (_many_names_one_storage, r"declare \d+ bytes, more than 4 times"),
    ],
    ids=["stride0", "overlapping", "shared-storage"],
)
def test_views_that_a_converter_would_materialise_are_refused(
    tmp_path: Path, name: str, make, message: str
) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"model": make(name)}, path)
    assert path.stat().st_size < 200_000
    with pytest.raises(UnsafeCheckpointError, match=message):
        read_checkpoint(path)  # refused before any converter (flip, index) copies the view
    from lazydet.checkpoint import load_weights

    with pytest.raises(UnsafeCheckpointError, match="weights.pth"):
        load_weights(torch.nn.Linear(2, 2), path)


def test_permuted_and_tied_tensors_still_load(tmp_path: Path) -> None:
    weight = torch.randn(8, 3, 3, 3)
    state = {"a": weight.permute(0, 2, 3, 1), "b": weight, "c": weight}  # tied: one storage
    path = tmp_path / "ok.pth"
    torch.save(state, path)
    loaded = read_checkpoint(path).state_dict
    assert torch.equal(loaded["a"], state["a"]) and torch.equal(loaded["c"], weight)


# ---------------------------------------------------------------------------------------------
# The config stored in a checkpoint's metadata is data


def _checkpoint_with_config(tmp_path: Path, text: str, kind: str) -> Path:
    metadata = build_metadata(class_names=["a"])
    metadata.update(config=text, config_format=kind)
    path = tmp_path / "model_final.pth"
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}, "metadata": metadata})
    return path


def _payloads(marker: Path) -> list[tuple[str, str]]:
    return [
        ("py", f"open({str(marker)!r}, 'w').write('pwned')\nmodel = None\n"),
        ("py", f"import os\nos.system('touch {marker}')\nmodel = None\n"),
        (
            "yaml",
            f"model:\n  _target_: builtins.open\n  _args_: [{str(marker)!r}, w]\n",
        ),
        ("yaml", f"model:\n  _target_: os.system\n  _args_: ['touch {marker}']\n"),
        (
            "yaml",
            f"model:\n  _target_: lazydet.config.load\n  _args_: [{marker!s}.py]\n",
        ),
    ]


@pytest.mark.parametrize("case", range(5), ids=["py-open", "py-os", "yaml-open", "yaml-os", "load"])
def test_stored_config_payload_never_runs(tmp_path: Path, case: int) -> None:
    from lazydet.evaluation.predictor import Predictor

    marker = tmp_path / "written_by_checkpoint"
    kind, text = _payloads(marker)[case]
    path = _checkpoint_with_config(tmp_path, text, kind)
    expected = "trusted=True" if kind == "py" else r"outside lazydet.config.SAFE_TARGETS"
    with pytest.raises(CheckpointError, match=expected):
        Predictor.from_checkpoint(path, device="cpu")
    with pytest.raises(CheckpointError, match=expected):
        config_from_metadata(read_metadata(path))
    assert not marker.exists()


def test_stored_python_config_runs_only_when_trusted(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = _checkpoint_with_config(
        tmp_path, f"open({str(marker)!r}, 'w').write('x')\nmodel = 1\n", "py"
    )
    with pytest.raises(CheckpointError, match="conf=EXPERIMENT"):
        config_from_metadata(read_metadata(path))
    assert not marker.exists()
    assert config_from_metadata(read_metadata(path), trusted=True)["model"] == 1
    assert marker.exists()  # the user said so


def test_new_checkpoints_store_the_config_as_data(tmp_path: Path) -> None:
    config = {"model": L("lazydet.modeling.backbone.LastLevelMaxPool")(in_feature="p5")}
    metadata = build_metadata(class_names=["a"], config=config)
    assert metadata["config_format"] == "yaml"
    rebuilt = config_from_metadata(metadata)  # untrusted: allow-listed targets only
    assert rebuilt["model"]["in_feature"] == "p5"
    # A target outside the allow-list is refused, not built.
    config = {"model": L(torch.nn.Linear)(in_features=2, out_features=3)}
    with pytest.raises(CheckpointError, match=r"SAFE_TARGETS.*torch\.nn\.Linear"):
        config_from_metadata(build_metadata(class_names=["a"], config=config))


# ---------------------------------------------------------------------------------------------
# The files of a run directory


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_lock_file_planted_in_a_run_directory_is_not_written_through(
    tmp_path: Path, kind: str
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"do not truncate me\n")
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, lock)
    else:
        os.mkfifo(lock)
    with pytest.raises(LockFileError, match=r"\.lock (is a symbolic link|has 2 names|is not a)"):
        Checkpointer(run).lock()
    assert victim.read_bytes() == b"do not truncate me\n"


def _run_with_two_checkpoints(tmp_path: Path) -> Checkpointer:
    from torch import nn

    ckpt = Checkpointer(tmp_path)
    for iteration in (10, 20):
        model = nn.Linear(2, 2)
        ckpt.save(
            f"model_{iteration:07d}.pth",
            {
                "model": model.state_dict(),
                "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict(),
                "iteration": iteration,
            },
        )
    return ckpt


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe model_0000010.pth\n", "not UTF-8"),
        (b"m" * 300 + b".pth\n", "longer than a file name"),
        (b"x" * 5000, "longer than a file name"),
        (b"../elsewhere/model_0000010.pth\n", "not a checkpoint file of this directory"),
        (b"model_0000099.pth\n", "does not exist"),
    ],
    ids=["non-utf8", "300-chars", "huge", "path", "missing"],
)
def test_a_bad_pointer_falls_back_to_the_newest_checkpoint(
    tmp_path: Path, caplog, content: bytes, problem: str
) -> None:
    ckpt = _run_with_two_checkpoints(tmp_path)
    (tmp_path / POINTER_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="lazydet.engine.checkpointer"):
        path, state = ckpt.load_latest()
    assert path.name == "model_0000020.pth" and state["iteration"] == 20
    assert problem in caplog.text and "newest checkpoint file instead" in caplog.text


def test_a_pointer_symlink_is_not_followed(tmp_path: Path, caplog) -> None:
    ckpt = _run_with_two_checkpoints(tmp_path)
    (tmp_path / POINTER_FILE).unlink()
    (tmp_path / POINTER_FILE).symlink_to("/dev/zero")
    with caplog.at_level(logging.WARNING, logger="lazydet.engine.checkpointer"):
        path, _ = ckpt.load_latest()
    assert path.name == "model_0000020.pth"
