"""``dataset=coco_json``: a COCO json of your own, its metadata read from the json, end to end.

The real data are 4 COCO val2017 photos with 14 person annotations (polygons and 17 keypoints)
from ``../shared/data/coco_person_val2017`` (mmpose's test data; see its README).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from helpers import run_python

from lazydet.config import ConfigError, L, compose, resolve
from lazydet.data import DatasetCatalog, MetadataCatalog, register_coco
from lazydet.data.datasets import COCO_KEYPOINT_FLIP_MAP, COCO_KEYPOINT_NAMES
from lazydet.data.datasets.coco_json import coco_json_metadata, keypoint_flip_map_from_names
from lazydet.utils.visualizer import COCO_PERSON_SKELETON

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def person(shared_data: Path) -> Path:
    folder = shared_data / "coco_person_val2017"
    if not (folder / "test_coco.json").is_file():
        pytest.skip(f"{folder}/test_coco.json is absent")
    return folder


def _split(person: Path, tmp_path: Path) -> tuple[Path, Path]:
    """train.json (the first 2 photos) and test.json (the other 2), images in ``person``."""
    data = json.loads((person / "test_coco.json").read_text())
    paths = []
    for name, images in (("train", data["images"][:2]), ("test", data["images"][2:])):
        ids = {image["id"] for image in images}
        part = {
            "images": images,
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
            "categories": data["categories"],
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(part))
        paths.append(path)
    return paths[0], paths[1]


def _overrides(train: Path, test: Path, images: Path) -> list[str]:
    return [
        "dataset=coco_json",
        f"dataset.train_json={train}",
        f"dataset.train_images={images}",
        f"dataset.test_json={test}",
        f"dataset.test_images={images}",
    ]


def test_metadata_from_the_json(person: Path) -> None:
    meta = coco_json_metadata(person / "test_coco.json")
    assert meta["thing_classes"] == ["person"]
    assert meta["thing_dataset_id_to_contiguous_id"] == {1: 0}
    assert meta["keypoint_names"] == list(COCO_KEYPOINT_NAMES)
    # References written by hand elsewhere: COCO's flip pairs and person skeleton.
    assert meta["keypoint_flip_map"] == list(COCO_KEYPOINT_FLIP_MAP)
    assert set(meta["keypoint_skeleton"]) == set(COCO_PERSON_SKELETON)


def test_flip_map_from_names_pairs_left_and_right_only() -> None:
    names = ["nose", "LeftEye", "RightEye", "tail_left", "tail_right", "left_only"]
    assert keypoint_flip_map_from_names(names) == [
        ("LeftEye", "RightEye"),
        ("tail_left", "tail_right"),
    ]


def test_compose_sizes_the_heads_from_the_json(person: Path, tmp_path: Path) -> None:
    data = json.loads((person / "test_coco.json").read_text())
    data["categories"] = [
        {"id": 7, "name": "cyclist"},
        {"id": 3, "name": "walker"},
        {"id": 5, "name": "runner"},
    ]
    for ann in data["annotations"]:
        ann.pop("keypoints")
        ann["category_id"] = 3
    own = tmp_path / "own.json"
    own.write_text(json.dumps(data))
    cfg = compose("mask_rcnn_fpn", _overrides(own, own, person))
    assert resolve(cfg.model.roi_heads).num_classes == 3
    dataset = resolve(cfg.dataset)
    assert dataset.num_keypoints == 0
    assert dataset.train == str(own)
    # Sorted by json id, as load_coco_json numbers them; registered before any image is read.
    assert MetadataCatalog.get(dataset.train).thing_classes == ["walker", "runner", "cyclist"]
    records = DatasetCatalog.get(dataset.train)  # loading agrees with the metadata already set
    assert {a["category_id"] for r in records for a in r["annotations"]} == {0}


def test_keypoint_recipe_reads_the_keypoints(person: Path, tmp_path: Path) -> None:
    train, test = _split(person, tmp_path)
    cfg = compose("keypoint_rcnn_fpn", _overrides(train, test, person))
    assert resolve(cfg.model.roi_heads.keypoint_head).num_keypoints == 17


def test_unset_and_absent_jsons_are_one_clear_error_each(person: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as unset:
        compose("mask_rcnn_fpn", ["dataset=coco_json"])
    lines = str(unset.value).splitlines()[1:]
    assert [line.split(" is MISSING")[0] for line in lines] == [
        "  - dataset.train_json",
        "  - dataset.train_images",
        "  - dataset.test_json",
        "  - dataset.test_images",
    ]
    absent = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as missing:
        compose("mask_rcnn_fpn", _overrides(absent, person / "test_coco.json", person))
    lines = str(missing.value).splitlines()[1:]
    assert len(lines) == 1, lines
    assert f"dataset.train_json='{absent}': no such file" in lines[0]


def test_catalogs_take_a_register_coco_node(person: Path) -> None:
    """``dataset.test = L(register_coco)(...)``: reading it through the catalogs used to raise
    ``TypeError: unhashable type: 'Config'`` (the run's val_predictions.png failed)."""
    node = L(register_coco)(
        name="test_coco_json_node", json_file=str(person / "test_coco.json"), image_root=str(person)
    )
    try:
        records = DatasetCatalog.get(node)
        assert len(records) == 4
        assert MetadataCatalog.get(node).thing_classes == ["person"]
    finally:
        DatasetCatalog.remove("test_coco_json_node")
        MetadataCatalog.remove("test_coco_json_node")
    with pytest.raises(ValueError, match="unresolved"):
        DatasetCatalog.get("${dataset.test}")


@pytest.mark.slow
def test_train_and_evaluate_a_coco_json(person: Path, tmp_path: Path) -> None:
    """docs/data.md's command, with a tiny model and small images: trains, evaluates, and the
    checkpoint carries the json's class names; lazydet.evaluate works on it."""
    train, test = _split(person, tmp_path)
    small = [
        "model.backbone=resnet18",
        "train.init_checkpoint=null",
        "schedule.max_iter=2",
        "dataset.train_short_edge=[128]",
        "dataset.test_short_edge=128",
        "dataset.max_size=192",
        "dataset.num_workers=0",
        "dataloader.train.total_batch_size=2",
        "dataloader.test.num_workers=0",
    ]
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    experiment = ["conf=mask_rcnn_fpn", *_overrides(train, test, person), *small]
    done = run_python(
        ["-m", "lazydet.train", *experiment, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bbox/AP:" in done.stdout and "segm/AP:" in done.stdout
    checkpoint = torch.load(run_dir / "model_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["metadata"]["class_names"] == ["person"]
    checkpoint_override = f"train.init_checkpoint={run_dir / 'model_final.pth'}"
    evaluated = run_python(
        ["-m", "lazydet.evaluate", *experiment, checkpoint_override, f"output={tmp_path / 'eval'}"],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "bbox: AP=" in evaluated.stdout and "segm: AP=" in evaluated.stdout
    # Every tensor of the run's checkpoint fits the model the json sized.
    assert re.search(r"Loaded (\d+) of \1 model tensors", evaluated.stderr), evaluated.stderr
