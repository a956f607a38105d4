"""DatasetCatalog / MetadataCatalog behaviour and keypoint flip permutations."""

from __future__ import annotations

import json

import pytest

from lazydet.data import (
    DatasetCatalog,
    MetadataCatalog,
    flip_indices_from_metadata,
    keypoint_flip_indices,
    register_coco,
)
from lazydet.data.datasets import COCO_KEYPOINT_FLIP_MAP, COCO_KEYPOINT_NAMES


@pytest.fixture
def unique_name(request: pytest.FixtureRequest):
    name = f"test_catalog_{request.node.name}"
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _records_a() -> list[dict]:
    return [{"file_name": "a.jpg", "image_id": 1, "height": 1, "width": 1, "annotations": []}]


def _records_b() -> list[dict]:
    return []


def test_register_and_get(unique_name: str) -> None:
    DatasetCatalog.register(unique_name, _records_a)
    assert DatasetCatalog.get(unique_name) == _records_a()
    assert unique_name in DatasetCatalog.names()
    DatasetCatalog.register(unique_name, _records_a)  # the same function again: fine


def test_reregister_with_other_function_fails(unique_name: str) -> None:
    DatasetCatalog.register(unique_name, _records_a)
    with pytest.raises(ValueError, match="already registered with a different loader"):
        DatasetCatalog.register(unique_name, _records_b)


def test_unknown_name_lists_names_and_suggests() -> None:
    with pytest.raises(KeyError) as info:
        DatasetCatalog.get("coco_2017_trian")
    message = str(info.value)
    assert "Did you mean 'coco_2017_train'" in message
    assert "shapes_val" in message  # the list of registered names


def test_loader_must_return_list(unique_name: str) -> None:
    DatasetCatalog.register(unique_name, lambda: {"not": "a list"})
    with pytest.raises(TypeError, match="must return a list of dicts"):
        DatasetCatalog.get(unique_name)


def test_metadata_refuses_silent_change(unique_name: str) -> None:
    meta = MetadataCatalog.get(unique_name)
    meta.thing_classes = ["a", "b"]
    meta.thing_classes = ["a", "b"]  # same value: fine
    with pytest.raises(ValueError, match="refusing to change"):
        meta.thing_classes = ["b", "a"]
    with pytest.raises(AttributeError, match="thing_classes"):
        _ = meta.keypoint_names  # the message lists what is set


def test_keypoint_flip_indices_hand_computed() -> None:
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    flip_map = [("left_eye", "right_eye"), ("left_ear", "right_ear")]
    assert keypoint_flip_indices(names, flip_map) == [0, 2, 1, 4, 3]
    coco = keypoint_flip_indices(list(COCO_KEYPOINT_NAMES), COCO_KEYPOINT_FLIP_MAP)
    assert coco == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    with pytest.raises(ValueError, match="not in keypoint_names"):
        keypoint_flip_indices(names, [("left_eye", "right_knee")])
    assert flip_indices_from_metadata("keypoints_coco_2017_val") == coco
    assert flip_indices_from_metadata("shapes_train") == [0, 3, 2, 1]  # top right bottom left


def test_register_coco_is_one_call_and_idempotent(tmp_path, unique_name: str) -> None:
    json_file = tmp_path / "tiny.json"
    json_file.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "x.jpg", "height": 10, "width": 20}],
                "annotations": [
                    {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0}
                ],
                "categories": [{"id": 5, "name": "thing"}],
            }
        )
    )
    metadata = {"keypoint_oks_sigmas": []}
    assert register_coco(unique_name, json_file, tmp_path, metadata=metadata) == unique_name
    register_coco(unique_name, json_file, tmp_path, metadata=metadata)  # a config loaded twice
    records = DatasetCatalog.get(unique_name)
    assert records[0]["annotations"][0]["bbox"] == (1.0, 2.0, 4.0, 6.0)
    meta = MetadataCatalog.get(unique_name)
    assert meta.thing_classes == ["thing"]
    assert meta.thing_dataset_id_to_contiguous_id == {5: 0}
    assert meta.evaluator_type == "coco"
    with pytest.raises(ValueError, match="already registered"):
        register_coco(unique_name, json_file, tmp_path / "elsewhere")


def test_builtin_missing_dataset_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAZYDET_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get("coco_2017_val")
    message = str(info.value)
    assert str(tmp_path / "coco" / "annotations" / "instances_val2017.json") in message
    assert "LAZYDET_DATASETS" in message
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        DatasetCatalog.get("voc_2012_trainval")
    assert MetadataCatalog.get("keypoints_coco_2017_train").keypoint_names == list(
        COCO_KEYPOINT_NAMES
    )
    assert len(MetadataCatalog.get("coco_2017_train").thing_classes) == 80


def test_register_coco_from_a_config(tmp_path, unique_name: str) -> None:
    """A config registers its dataset inline: register_coco returns the name the loader needs."""
    from PIL import Image

    from lazydet.config import L, instantiate
    from lazydet.data import DatasetMapper, build_test_loader

    Image.new("RGB", (6, 4)).save(tmp_path / "a.png")
    json_file = tmp_path / "tiny.json"
    json_file.write_text(
        json.dumps(
            {
                "images": [{"id": 3, "file_name": "a.png", "height": 4, "width": 6}],
                "annotations": [],
                "categories": [{"id": 1, "name": "x"}],
            }
        )
    )
    cfg = L(build_test_loader)(
        dataset=L(register_coco)(
            name=unique_name, json_file=str(json_file), image_root=str(tmp_path)
        ),
        mapper=L(DatasetMapper)(augmentations=None, is_train=False),
    )
    batches = list(instantiate(cfg))
    assert [[(d["image_id"], tuple(d["image"].shape)) for d in b] for b in batches] == [
        [(3, (3, 4, 6))]
    ]
    assert unique_name in DatasetCatalog
