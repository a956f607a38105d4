"""lazydet's own checkpoints: atomic save, safe load, metadata a predictor can be built from.

References: round trips (every tensor equal, the rebuilt config instantiating a model that takes
the saved weights completely), a FIFO where a file belongs, and a save interrupted mid-write (the
previous file must survive). Files damaged the ways real files are:
tests/checkpoint/test_broken_files.py.
"""

from __future__ import annotations

import os
import threading
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lazydet.checkpoint.store as store
from lazydet.checkpoint import (
    CheckpointError,
    build_metadata,
    config_from_metadata,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    read_metadata,
    save_checkpoint,
)
from lazydet.config import L, instantiate
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone import FPN, LastLevelMaxPool, LastLevelP6P7, ResNet
from lazydet.modeling.meta_arch.retinanet import RetinaNet

COCO_LIKE = ["person", "bicycle", "car"]


def _small_retinanet_config() -> dict:
    """A whole experiment's ``model`` entry: nested deferred calls, as conf/ files write them."""
    model = L(RetinaNet)(
        backbone=L(FPN)(bottom_up=L(ResNet)(depth=18), out_channels=16),
        top_block=L(LastLevelP6P7)(in_channels=16, out_channels=16, in_feature="p5"),
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=L(DefaultAnchorGenerator)(sizes=[[32], [64], [128], [256], [512]]),
        num_classes=len(COCO_LIKE),
    )
    return {"model": model}


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------------------------
# Round trips


def test_save_load_round_trip_with_resume_state(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()  # momentum buffers exist now
    payload = {
        "model": model.state_dict(),
        "metadata": build_metadata(class_names=COCO_LIKE),
        "optimizer": optimizer.state_dict(),
        "iteration": 1234,
    }
    path = tmp_path / "model_0001234.pth"

    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)

    assert _files(tmp_path) == ["model_0001234.pth"]  # no temporary file left behind
    assert loaded["iteration"] == 1234
    assert loaded["metadata"] == payload["metadata"]
    for name, value in payload["model"].items():
        assert torch.equal(loaded["model"][name], value), name
    restored = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(loaded["optimizer"])
    for a, b in zip(restored.state.values(), optimizer.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])

    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    report = load_weights(target, path, strict=True)  # load_weights reads the same layout
    assert report.naming == "lazydet" and report.complete
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "lazydet" and checkpoint.meta["iteration"] == 1234
    assert "optimizer" not in checkpoint.meta  # resume state is not weights
    assert torch.equal(target[0].weight, model[0].weight)


def test_checkpoint_alone_rebuilds_the_model(tmp_path: Path) -> None:
    config = _small_retinanet_config()
    model = instantiate(config["model"])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(-0.1, 0.1)
    path = tmp_path / "model_final.pth"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "metadata": build_metadata(class_names=COCO_LIKE, input_format="BGR", config=config),
        },
    )
    del model, config

    # What a predictor does with nothing but the file:
    metadata = read_metadata(path)
    rebuilt = instantiate(config_from_metadata(metadata)["model"])
    report = load_weights(rebuilt, path, strict=True)

    assert report.complete
    assert metadata["class_names"] == COCO_LIKE and metadata["input_format"] == "BGR"
    assert metadata["config_format"] == "yaml"  # data: read back untrusted, no code runs
    assert metadata["lazydet_version"] == package_metadata.version("lazydet")
    assert rebuilt.num_classes == len(COCO_LIKE)
    saved = load_checkpoint(path)["model"]
    for name, value in rebuilt.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_config_with_a_key_that_is_not_python_is_stored_as_yaml(tmp_path: Path) -> None:
    # A top-level key that is not an identifier cannot be a Python config line; YAML holds it.
    config = {"my-model": L(LastLevelMaxPool)(in_feature="p5")}  # an allow-listed target
    metadata = build_metadata(class_names=["a"], config=config)
    assert metadata["config_format"] == "yaml"
    block = instantiate(config_from_metadata(metadata)["my-model"])
    assert isinstance(block, LastLevelMaxPool) and block.in_feature == "p5"


def test_keypoint_metadata(tmp_path: Path) -> None:
    metadata = build_metadata(
        class_names=["person"],
        keypoint_names=["nose", "left_eye", "right_eye"],
        keypoint_flip_map={"left_eye": "right_eye"},
        keypoint_skeleton=[("nose", "left_eye"), ("nose", "right_eye")],
    )
    path = tmp_path / "kp.pth"
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}, "metadata": metadata})
    read = read_metadata(path)
    assert read["keypoint_names"] == ["nose", "left_eye", "right_eye"]
    assert read["keypoint_flip_map"] == [("left_eye", "right_eye")]
    assert read["keypoint_skeleton"] == [("nose", "left_eye"), ("nose", "right_eye")]
    assert read["config"] is None
    with pytest.raises(CheckpointError, match="saved without its config"):
        config_from_metadata(read)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"class_names": "person"}, TypeError, "class_names must be a list of strings"),
        ({"class_names": []}, ValueError, "class_names is empty"),
        ({"class_names": ["a", 3]}, TypeError, r"non-empty strings; found \[3\]"),
        ({"class_names": ["a", "b", "a"]}, ValueError, r"repeats \['a'\]"),
        ({"class_names": ["a"], "input_format": "rgb"}, ValueError, "input_format='rgb'"),
        (
            {"class_names": ["a"], "keypoint_flip_map": {"l": "r"}},
            ValueError,
            "keypoint_flip_map needs keypoint_names",
        ),
        (
            {"class_names": ["a"], "keypoint_names": ["l", "r"], "keypoint_flip_map": {"l": "x"}},
            ValueError,
            r"keypoint_flip_map names \['x'\]",
        ),
        (
            {"class_names": ["a"], "keypoint_names": ["l"], "keypoint_skeleton": [("l",)]},
            TypeError,
            "keypoint_skeleton entries are",
        ),
        ({"class_names": ["a"], "config": "model = 1"}, TypeError, "got str"),
    ],
)
def test_build_metadata_refuses_malformed_arguments(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        build_metadata(**kwargs)


# ---------------------------------------------------------------------------------------------
# save_checkpoint is atomic


def test_failure_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pth"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "iteration": 1})
    before = path.read_bytes()

    def write_half_then_fail(payload, file):  # a disk that fills up mid-write
        file.write(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.torch, "save", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "iteration": 2})

    assert path.read_bytes() == before
    assert _files(tmp_path) == ["last.pth"]
    assert load_checkpoint(path)["iteration"] == 1


def test_unloadable_payload_is_refused_before_replacing(tmp_path: Path) -> None:
    path = tmp_path / "last.pth"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    payload = {"model": {"w": torch.zeros(3)}, "scheduler": {"last_lr": np.float64(0.1)}}
    with pytest.raises(CheckpointError, match=r"payload\['scheduler'\]\['last_lr'\].*numpy"):
        save_checkpoint(path, payload)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert _files(tmp_path) == ["last.pth"]


def test_directory_for_a_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(IsADirectoryError, match=r"out is a directory.*model_final\.pth"):
        save_checkpoint(tmp_path / "out", {"model": {"w": torch.zeros(1)}})
    assert _files(tmp_path / "out") == ["keep.txt"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [([1, 2], "payload must be a dict"), ({"weights": {}}, r"payload\['model'\] must be")],
)
def test_payload_without_a_model_is_refused(tmp_path: Path, payload, message) -> None:
    with pytest.raises(TypeError, match=message):
        save_checkpoint(tmp_path / "x.pth", payload)
    assert _files(tmp_path) == []


def test_parent_directories_are_created_and_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "run" / "checkpoints" / "model.pth"
        save_checkpoint(path, {"model": {"w": torch.zeros(1)}})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by a team sharing the directory


def test_two_writers_at_once_leave_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pth"
    errors: list[BaseException] = []

    def writer(value: float) -> None:
        try:
            for _ in range(5):
                save_checkpoint(path, {"model": {"w": torch.full((50_000,), value)}})
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1.0, 2.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    w = load_checkpoint(path)["model"]["w"]
    assert w.shape == (50_000,) and float(w[0]) in (1.0, 2.0) and bool((w == w[0]).all())
    assert _files(tmp_path) == ["last.pth"]


# ---------------------------------------------------------------------------------------------
# load_checkpoint on bad files (the rest: tests/checkpoint/test_broken_files.py)


def test_a_fifo_does_not_block(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "pipe.pth")
    with pytest.raises(CheckpointError, match=r"pipe\.pth is empty"):
        load_checkpoint(tmp_path / "pipe.pth")
