"""Problems caught before the first step, each with one message naming what is at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_train import CONF_DIR

from lazydet.config import InstantiationError, compose
from lazydet.data import DatasetCatalog, MetadataCatalog
from lazydet.data.datasets import generate_shapes, load_coco_json
from lazydet.engine.run import check_model_matches_dataset

# The tiny config reads a COCO json by path; these tests swap in a registered name instead.
_DATA_PLACEHOLDERS = [
    "dataloader.train.dataset.json_file=unused",
    "dataloader.train.dataset.image_root=unused",
]


@pytest.fixture
def tiny_conf(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(CONF_DIR))
    monkeypatch.chdir(tmp_path)
    return CONF_DIR


@pytest.fixture
def registered_shapes(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes(root, num_images=4, image_size=32, seed=3)
    names = []

    def register(name: str, *, empty: bool = False) -> str:
        def load():
            records = load_coco_json(root / "annotations.json", root, dataset_name=name)
            if empty:
                for r in records:
                    r["annotations"] = []
            return records

        DatasetCatalog.register(name, load)
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_model_and_dataset_disagreeing_on_classes_stop_before_training(
    tiny_conf, registered_shapes, tmp_path, capsys
) -> None:
    from lazydet.train import run

    name = registered_shapes("tiny_checks_train")
    cfg = compose("tiny", [*_DATA_PLACEHOLDERS, "model.num_classes=5"])
    cfg.dataloader.train.dataset = name
    with pytest.raises(SystemExit) as exit_info:
        run(cfg, tmp_path / "run")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert (
        "model.num_classes=5 but the training dataset "
        "dataloader.train.dataset='tiny_checks_train' has 3 classes" in err
    )
    assert "circle, square, triangle" in err and "Traceback" not in err
    # Nothing ran: no checkpoint, no metrics.
    assert not list((tmp_path / "run").glob("model_*.pth"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_keypoint_count_mismatch_names_both_keys(registered_shapes) -> None:
    name = registered_shapes("tiny_checks_kp")
    DatasetCatalog.get(name)  # loading registers the metadata
    cfg = {
        "model": {"roi_heads": {"num_classes": 3, "keypoint_head": {"num_keypoints": 17}}},
        "dataloader": {"train": {"dataset": name}},
    }
    with pytest.raises(ValueError) as info:
        check_model_matches_dataset(cfg)
    message = str(info.value)
    assert "model.roi_heads.keypoint_head.num_keypoints=17" in message
    assert "dataloader.train.dataset='tiny_checks_kp' has 4 keypoints" in message
    assert "num_classes" not in message.split("keypoints")[0].split("disagree:")[1]
    cfg["model"]["roi_heads"]["keypoint_head"]["num_keypoints"] = 4
    check_model_matches_dataset(cfg)  # agreeing: no error


def test_a_dataset_without_usable_images_is_one_message(
    tiny_conf, registered_shapes, tmp_path
) -> None:
    from lazydet.train import run

    name = registered_shapes("tiny_checks_empty", empty=True)
    cfg = compose("tiny", _DATA_PLACEHOLDERS)
    cfg.dataloader.train.dataset = name
    with pytest.raises(InstantiationError, match=r"no images left in \['tiny_checks_empty'\]"):
        run(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").glob("model_*.pth"))
