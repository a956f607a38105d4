"""COCO json loading, checked against pycocotools on real COCO files and on small jsons."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from lazydet.data import DatasetMapper, MetadataCatalog, load_coco_json
from lazydet.data.rle import rle_run_lengths

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


def _rle_string(mask: np.ndarray) -> str:
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


_MASK_4x5 = np.zeros((4, 5), dtype=np.uint8)
_MASK_4x5[1:3, 2:5] = 1
_MASK_5x5 = np.zeros((5, 5), dtype=np.uint8)
_MASK_5x5[1:3, 2:5] = 1
# The images of the bad-case json are 4x5 (H x W): 20 pixels.
BAD_CASES = [
    ({"bbox": [0, 0, -1, 2]}, "negative width or height"),
    ({"bbox": [0, float("nan"), 1, 2]}, "NaN or infinite"),
    ({"bbox": [True, False, True, True]}, "bbox values must be numbers"),
    ({"bbox": ["0", "0", "1", "2"]}, "bbox values must be numbers"),
    ({"category_id": 4}, "unknown category_id 4"),
    ({"category_id": True}, "unknown category_id True"),  # True == 1 would find a class
    ({"image_id": 99}, "unknown image_id 99"),
    ({"image_id": True}, "unknown image_id True"),
    ({"iscrowd": 2}, "iscrowd must be 0 or 1"),
    ({"keypoints": [1, 1, 2, 3, 3]}, "keypoints has 5 values"),
    ({"segmentation": [[1, 1, 2, 2]]}, "polygon has 4 coordinates"),
    # float64 arrays from text would read "2" as 2.0; pycocotools fails on it later.
    ({"segmentation": [["1", "1", "2", "1", "2", "2"]]}, "polygon is not a flat list of numbers"),
    ({"segmentation": [[1, 1, 2, 1, "2", 2]]}, "polygon is not a flat list of numbers"),
    ({"segmentation": [[1, 1, 2, 1, None, 2]]}, "polygon is not a flat list of numbers"),
    # Run lengths that do not cover the 20 pixels: pycocotools would decode uninitialised memory
    # (fewer) or fail later without naming the annotation (more, garbage).
    ({"segmentation": {"size": [4, 5], "counts": [3, 2]}}, "sum to 5 pixels but the mask is 4x5"),
    ({"segmentation": {"size": [4, 5], "counts": [3, 20]}}, "sum to 23 pixels"),
    ({"segmentation": {"size": [4, 5], "counts": [-3, 23]}}, "negative run length (-3)"),
    ({"segmentation": {"size": [4, 5], "counts": [10.0, 10]}}, "must be integers, got 10.0"),
    ({"segmentation": {"size": [4, 5], "counts": [True] * 20}}, "must be integers, got True"),
    ({"segmentation": {"size": [4, 5], "counts": _rle_string(_MASK_4x5)[:-1]}}, "sum to"),
    ({"segmentation": {"size": [4, 5], "counts": _rle_string(_MASK_5x5)}}, "sum to 25 pixels"),
    ({"segmentation": {"size": [4, 5], "counts": "zzzz"}}, "characters outside '0'..'o'"),
    ({"segmentation": {"size": [4, 5], "counts": "3\u00e92"}}, "non-ASCII"),
    ({"segmentation": {"size": [4, 5], "counts": "0n"}}, "truncated"),  # 'n' = more to come
    ({"segmentation": {"size": [4, 5], "counts": 7}}, "list of run lengths or a string"),
    ({"segmentation": {"size": [5, 4], "counts": [20]}}, "differs from the image size"),
    ({"segmentation": {"size": 20, "counts": [20]}}, "differs from the image size"),
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
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # json.load would wait for a writer for ever
    for not_a_file in (fifo, tmp_path):
        with pytest.raises(ValueError, match="is not a regular file"):
            load_coco_json(not_a_file, tmp_path)


def test_rle_string_counts_round_trip_through_pycocotools() -> None:
    """Run lengths -> pycocotools' compressed string -> the validator's reading: the same runs
    (random runs with long values, zero first runs, and both parities, for the delta coding)."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        num_runs = int(rng.integers(1, 40))
        scale = 10 ** int(rng.integers(0, 7))
        runs = rng.integers(1, scale + 1, num_runs).tolist()
        if trial % 3 == 0:
            runs[0] = 0  # masks that start with a foreground pixel
        total = sum(runs)
        rle = mask_util.frPyObjects({"size": [total, 1], "counts": runs}, total, 1)
        read = rle_run_lengths(rle["counts"].decode())
        assert read.tolist() == runs, trial
    # A real mask: its runs sum to H x W and pycocotools decodes it to the same mask.
    mask = (rng.uniform(size=(37, 23)) < 0.3).astype(np.uint8)
    assert rle_run_lengths(_rle_string(mask)).sum() == 37 * 23


def test_valid_rles_of_every_kind_still_load(tmp_path: Path) -> None:
    """The counts checks refuse nothing pycocotools encodes (empty, full and 1-pixel masks)."""
    masks = [np.zeros((4, 5)), np.ones((4, 5)), np.eye(4, 5), _MASK_4x5]
    annotations = [
        {"id": i, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "iscrowd": 0,
         "segmentation": {"size": [4, 5], "counts": _rle_string(m)}}
        for i, m in enumerate(masks)
    ]  # fmt: skip
    records = load_coco_json(_write(tmp_path, annotations), tmp_path)
    for ann, mask in zip(records[0]["annotations"], masks):
        np.testing.assert_array_equal(mask_util.decode(ann["segmentation"]), mask)


def test_duplicate_annotation_id(tmp_path: Path, caplog) -> None:
    anns = [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2]},
        {"id": 10, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]},
    ]
    path = _write(tmp_path, anns)
    with pytest.raises(ValueError) as info:
        load_coco_json(path, tmp_path)
    text = str(info.value)
    assert str(path) in text and "annotation id=10" in text and "used twice" in text
    with caplog.at_level(logging.WARNING):
        records = load_coco_json(path, tmp_path, filter_invalid=True)
    assert [a["category_id"] for a in records[0]["annotations"]] == [0]  # the first one is kept
    assert "dropped 1 invalid annotations" in caplog.text


def test_duplicate_category_id_is_refused(tmp_path: Path) -> None:
    categories = [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 3, "name": "bird"}]
    path = _write(tmp_path, [], categories=categories)
    with pytest.raises(ValueError) as info:
        load_coco_json(path, tmp_path)
    text = str(info.value)
    assert str(path) in text and "categories[2]" in text
    assert "category id 3 is used twice (by 'cat' and 'bird')" in text and "unique" in text


_IMAGE = {"id": 1, "file_name": "a.png", "height": 4, "width": 5}


@pytest.mark.parametrize(
    ("images", "categories", "message"),
    [
        ([{k: v for k, v in _IMAGE.items() if k != "height"}], None, r"images\[0\] \(id=1\) has no height"),
        ([{k: v for k, v in _IMAGE.items() if k != "file_name"}], None, r"images\[0\] \(id=1\) has no file_name"),
        ([{k: v for k, v in _IMAGE.items() if k != "id"}], None, r"images\[0\] has no id"),
        ([_IMAGE | {"width": 0}], None, "width 0; it must be the image's size in pixels"),
        ([_IMAGE | {"width": "5"}], None, "width '5'"),
        ([_IMAGE | {"height": 4.5}], None, "height 4.5"),
        ([_IMAGE | {"id": True}], None, "has id True"),
        ([_IMAGE, _IMAGE | {"file_name": "b.png"}], None, "image id 1 appears twice"),
        (["a.png"], None, r"images\[0\] is a str, not an object"),
        (None, [{"name": "a"}], r"categories\[0\] has no id"),
        (None, [{"id": "3", "name": "a"}], r"categories\[0\] has id '3'"),
        (None, [{"id": 3}], r"categories\[0\] \(id=3\) has no name"),
    ],
)  # fmt: skip
def test_bad_images_and_categories_name_file_and_entry(
    tmp_path: Path, images, categories, message: str
) -> None:
    path = _write(tmp_path, [], categories=categories, images=images)
    with pytest.raises(ValueError, match=message) as info:
        load_coco_json(path, tmp_path)
    assert str(info.value).startswith(str(path)) and "fix the json" in str(info.value)


def test_integral_float_sizes_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, [], images=[_IMAGE | {"height": 4.0}])
    assert load_coco_json(path, tmp_path)[0]["height"] == 4


def test_non_utf8_and_non_coco_files_name_the_file(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.json"
    payload = '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "caf\u00e9"}]}'
    latin1.write_bytes(payload.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.json is not UTF-8 text.*re-encode"):
        load_coco_json(latin1, tmp_path)
    # The same text in UTF-8 loads (the class name survives).
    utf8 = tmp_path / "utf8.json"
    utf8.write_bytes(payload.encode("utf-8"))
    name = "test_coco_utf8"
    try:
        load_coco_json(utf8, tmp_path, dataset_name=name)
        assert MetadataCatalog.get(name).thing_classes == ["caf\u00e9"]
    finally:
        MetadataCatalog.remove(name)
    for text, message in [
        ("[1, 2]", "holds a json list"),
        ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
        ('{"images": [], "annotations": [3], "categories": []}', "'annotations' is a int"),
        ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ]:
        odd = tmp_path / "odd.json"
        odd.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            load_coco_json(odd, tmp_path)
        assert str(odd) in str(info.value)
