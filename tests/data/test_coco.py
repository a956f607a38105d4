"""COCO json loading, checked against pycocotools on real COCO files and on small jsons."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from lazydet.data import DatasetMapper, MetadataCatalog, load_coco_json

# pycocotools 2.0.x calls np.array(copy=False) internally; harmless, and not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


def _mask_of(segmentation, height: int, width: int) -> np.ndarray:
    """Rasterise a lazydet segmentation with pycocotools (polygon list or RLE)."""
    if isinstance(segmentation, dict):
        return mask_util.decode(segmentation)
    rles = mask_util.frPyObjects([p.tolist() for p in segmentation], height, width)
    return mask_util.decode(mask_util.merge(rles))


def test_val2014_100_matches_pycocotools(shared_data: Path) -> None:
    json_file = shared_data / "coco_val2014_100" / "instances_val2014_100.json"
    api = COCO(str(json_file))
    name = "test_coco_val2014_100"
    try:
        records = load_coco_json(json_file, "/images", dataset_name=name)
        meta = MetadataCatalog.get(name)
        cat_ids = sorted(api.getCatIds())
        assert meta.thing_classes == [api.cats[c]["name"] for c in cat_ids]
        contiguous_to_dataset = meta.thing_contiguous_id_to_dataset_id
        assert sorted(contiguous_to_dataset) == list(range(80))
        assert [contiguous_to_dataset[i] for i in range(80)] == cat_ids  # sorted json ids
        assert {
            v: k for k, v in contiguous_to_dataset.items()
        } == meta.thing_dataset_id_to_contiguous_id
    finally:
        MetadataCatalog.remove(name)
    assert len(records) == len(api.imgs) == 100
    num_annotations = crowd = 0
    for record in records:
        image = api.imgs[record["image_id"]]
        assert (record["height"], record["width"]) == (image["height"], image["width"])
        assert record["file_name"] == "/images/" + image["file_name"]
        reference = {a["id"]: a for a in api.imgToAnns[record["image_id"]]}
        assert {a["id"] for a in record["annotations"]} == set(reference)
        for ann in record["annotations"]:
            ref = reference[ann["id"]]
            x, y, w, h = ref["bbox"]
            assert ann["bbox"] == pytest.approx((x, y, x + w, y + h))
            assert contiguous_to_dataset[ann["category_id"]] == ref["category_id"]
            assert ann["iscrowd"] == ref["iscrowd"]
            ours = _mask_of(ann["segmentation"], record["height"], record["width"])
            np.testing.assert_array_equal(ours, api.annToMask(ref))
            num_annotations += 1
            crowd += ann["iscrowd"]
    assert num_annotations == 839 and crowd == 9


def test_person_keypoints_with_real_images(shared_data: Path) -> None:
    folder = shared_data / "coco_person_val2017"
    api = COCO(str(folder / "test_coco.json"))
    records = load_coco_json(folder / "test_coco.json", folder)
    mapper = DatasetMapper(
        augmentations=None, is_train=True, use_masks=True, mask_format="bitmask", use_keypoints=True
    )
    polygon_mapper = DatasetMapper(augmentations=None, is_train=True, use_masks=True)
    checked = 0
    for record in records:
        out = mapper(record)
        instances = out["instances"]
        polygon_masks = polygon_mapper(record)["instances"].gt_masks
        rasterised = polygon_masks.to_bitmasks(record["height"], record["width"]).tensor
        assert out["image"].shape == (3, record["height"], record["width"])
        references = [
            a for a in api.imgToAnns[record["image_id"]] if not a["iscrowd"]
        ]  # crowd regions are not training instances
        assert len(instances) == len(references)
        for i, ref in enumerate(references):
            x, y, w, h = ref["bbox"]
            np.testing.assert_allclose(
                instances.gt_boxes.tensor[i].numpy(), [x, y, x + w, y + h], rtol=0, atol=1e-3
            )
            expected_mask = api.annToMask(ref).astype(bool)
            np.testing.assert_array_equal(instances.gt_masks.tensor[i].numpy(), expected_mask)
            np.testing.assert_array_equal(rasterised[i].numpy(), expected_mask)
            kp = np.array(ref["keypoints"], dtype=np.float32).reshape(-1, 3)
            labelled = kp[:, 2] > 0
            kp[labelled, :2] += 0.5  # pixel index -> continuous coordinate (documented)
            np.testing.assert_allclose(instances.gt_keypoints.tensor[i].numpy(), kp, atol=1e-4)
            checked += 1
    assert checked == 14


def _write(tmp_path: Path, annotations: list[dict], categories=None, images=None) -> Path:
    payload = {
        "images": images or [{"id": 1, "file_name": "a.png", "height": 4, "width": 5}],
        "annotations": annotations,
        "categories": categories or [{"id": 3, "name": "a"}, {"id": 9, "name": "b"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(payload))
    return path


def test_rle_compressed_uncompressed_and_crowd(tmp_path: Path) -> None:
    mask = np.zeros((4, 5), dtype=np.uint8, order="F")
    mask[1:3, 2:5] = 1
    compressed = mask_util.encode(mask)
    # Uncompressed COCO RLE: run lengths in column-major order, starting with zeros.
    flat = mask.flatten(order="F")
    runs, current, count = [], 0, 0
    for v in flat:
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    runs.append(count)
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 9, "bbox": [2, 1, 3, 2], "iscrowd": 1,
         "segmentation": {"size": [4, 5], "counts": runs}},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [2, 1, 3, 2], "iscrowd": 0,
         "segmentation": {"size": [4, 5], "counts": compressed["counts"].decode()}},
    ]  # fmt: skip
    path = _write(tmp_path, annotations)
    records = load_coco_json(path, tmp_path)
    api = COCO(str(path))
    by_id = {a["id"]: a for a in records[0]["annotations"]}
    for ann_id in (1, 2):
        np.testing.assert_array_equal(
            _mask_of(by_id[ann_id]["segmentation"], 4, 5), api.annToMask(api.anns[ann_id])
        )
    assert by_id[1]["iscrowd"] == 1 and by_id[2]["iscrowd"] == 0
    assert by_id[1]["category_id"] == 1 and by_id[2]["category_id"] == 0  # ids 3, 9 -> 0, 1


BAD_CASES = [
    ({"bbox": [0, 0, -1, 2]}, "negative width or height"),
    ({"bbox": [0, float("nan"), 1, 2]}, "NaN or infinite"),
    ({"category_id": 4}, "unknown category_id 4"),
    ({"image_id": 99}, "unknown image_id 99"),
    ({"keypoints": [1, 1, 2, 3, 3]}, "keypoints has 5 values"),
    ({"segmentation": [[1, 1, 2, 2]]}, "polygon has 4 coordinates"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CASES)
def test_bad_annotation_messages_and_filtering(
    tmp_path, caplog, change: dict, message: str
) -> None:
    good = {"id": 10, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": 0}
    bad = {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": 0} | change
    categories = [{"id": 3, "name": "a", "keypoints": ["p", "q"]}]
    if "keypoints" in change:
        good["keypoints"] = [1, 1, 2, 0, 0, 0]
    path = _write(tmp_path, [good, bad], categories=categories if "keypoints" in change else None)
    with pytest.raises(ValueError) as info:
        load_coco_json(path, tmp_path)
    text = str(info.value)
    assert str(path) in text and "annotation id=11" in text and message in text
    assert "filter_invalid=True" in text
    with caplog.at_level(logging.WARNING):
        records = load_coco_json(path, tmp_path, filter_invalid=True)
    assert [a["id"] for a in records[0]["annotations"]] == [10]
    assert "dropped 1 invalid annotations" in caplog.text and "id=11" in caplog.text


def test_keypoints_offset_and_unlabelled(tmp_path: Path) -> None:
    categories = [{"id": 1, "name": "p", "keypoints": ["a", "b"]}]
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "bbox": [0, 0, 4, 4],
        "keypoints": [1, 2, 2, 0, 0, 0],
    }
    records = load_coco_json(_write(tmp_path, [ann], categories=categories), tmp_path)
    np.testing.assert_array_equal(
        records[0]["annotations"][0]["keypoints"], [[1.5, 2.5, 2], [0, 0, 0]]
    )


def test_empty_annotation_list_and_json_errors(tmp_path: Path) -> None:
    records = load_coco_json(_write(tmp_path, []), tmp_path)
    assert records[0]["annotations"] == []
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_coco_json(tmp_path / "missing.json", tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json is not valid json"):
        load_coco_json(broken, tmp_path)
