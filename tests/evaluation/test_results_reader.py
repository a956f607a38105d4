"""Results files read straight into arrays (``lazydet.evaluation.results_reader``, msgspec): the
same numbers as the parsed file, the same evaluation, and every file outside its schema read the
general way (so its problem is named as before)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_coco import keypoints_subset, synthetic_coco

from lazydet.evaluation import coco_eval, coco_evaluate, results_reader
from lazydet.evaluation.coco_eval import hotcoco_available

pytest.importorskip("msgspec")

ENGINES = ["auto", "vectorized"] + (["hotcoco"] if hotcoco_available() else [])


@pytest.fixture(scope="module")
def generated():
    gt, dets = synthetic_coco(8, objects_per_image=4.0, detections_per_image=25, seed=3)
    gt, dets = json.loads(json.dumps(gt)), json.loads(json.dumps(dets))  # plain json types
    return {"bbox": (gt, dets), "segm": (gt, dets), "keypoints": keypoints_subset(gt, dets)}


def _write(folder, gt, dets):
    gt_path, results_path = folder / "gt.json", folder / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(dets))
    return gt_path, results_path


def _assert_columns_equal_parsed(columns, dets, iou_type):
    assert len(columns) == len(dets)
    for key in ("image_id", "category_id"):
        np.testing.assert_array_equal(columns.__dict__[key], [d[key] for d in dets])
    # Bit for bit: the nearest float64 to each decimal, as the standard library reads it.
    assert columns.score.tolist() == [d["score"] for d in dets]
    if "bbox" in dets[0]:
        assert columns.bbox.tolist() == [d["bbox"] for d in dets]
    if iou_type == "keypoints":
        assert columns.keypoints.tolist() == [d["keypoints"] for d in dets]
    if iou_type == "segm":
        assert columns.segmentation == [d["segmentation"] for d in dets]
    assert columns[3] == {k: v for k, v in dets[3].items() if k in columns[3]}


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_columns_equal_the_parsed_file(generated, tmp_path, iou_type):
    gt, dets = generated[iou_type]
    _, path = _write(tmp_path, gt, dets)
    columns = results_reader.read_result_columns(path, iou_type)
    _assert_columns_equal_parsed(columns, dets, iou_type)


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_official_results_files_read_as_parsed(shared_data, iou_type):
    # COCO's official fake results (boxes; compressed RLE masks with boxes) and keypoints.
    name = {
        "bbox": "instances_val2014_fakebbox100_results.json",
        "segm": "instances_val2014_fakesegm100_results.json",
        "keypoints": "person_keypoints_139099_dt.json",
    }[iou_type]
    path = shared_data / "coco_val2014_100" / name
    columns = results_reader.read_result_columns(path, iou_type)
    _assert_columns_equal_parsed(columns, json.loads(path.read_text()), iou_type)


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
@pytest.mark.parametrize("engine", ENGINES)
def test_from_files_takes_the_array_reader_and_gives_the_same_numbers(
    generated, tmp_path, iou_type, engine, monkeypatch
):
    gt, dets = generated[iou_type]
    gt_path, results_path = _write(tmp_path, gt, dets)
    in_memory = coco_evaluate(gt, dets, iou_type, engine=engine, verbose=False)

    def general_reader(*args):  # the fast path must not need it on a well-formed file
        raise AssertionError("the results file was read the general way")

    monkeypatch.setattr(coco_eval, "load_results", general_reader)
    from_files = coco_evaluate(gt_path, results_path, iou_type, engine=engine, verbose=False)
    assert from_files.stats == in_memory.stats
    np.testing.assert_array_equal(from_files.precision, in_memory.precision)
    assert from_files.engine == in_memory.engine


def _edit(dets, index, **fields):
    dets = [dict(d) for d in dets]
    dets[index].update(fields)
    return dets


def _without(dets, index, key):
    dets = [dict(d) for d in dets]
    del dets[index][key]
    return dets


# Files outside the schema: the reader gives None, and coco_evaluate reads them the general way.
OUTSIDE = {
    "a missing score": ("bbox", lambda d: _without(d, 5, "score")),
    "a NaN literal": ("bbox", lambda d: _edit(d, 5, score=float("nan"))),
    "a score as text": ("bbox", lambda d: _edit(d, 5, score="0.5")),
    "a bool category": ("bbox", lambda d: _edit(d, 5, category_id=True)),
    "a float image id": ("bbox", lambda d: _edit(d, 5, image_id=1.0)),
    "a string image id": ("bbox", lambda d: _edit(d, 5, image_id="1")),
    "an image id past int64": ("bbox", lambda d: _edit(d, 5, image_id=2**70)),
    "a box of 3": ("bbox", lambda d: _edit(d, 5, bbox=[1.0, 2.0, 3.0])),
    "a null box": ("segm", lambda d: _edit(d, 0, bbox=None)),
    "a box in some only": ("segm", lambda d: _without(d, 5, "bbox")),
    "a polygon mask": ("segm", lambda d: _edit(d, 5, segmentation=[[1.0, 2, 3, 4, 5, 6]])),
    "an uncompressed RLE": (
        "segm",
        lambda d: _edit(d, 5, segmentation={"size": d[5]["segmentation"]["size"], "counts": [1]}),
    ),
    "keypoints of two lengths": ("keypoints", lambda d: _edit(d, 5, keypoints=[1.0, 2.0, 1.0])),
    "keypoints, a mask, no box": (
        "keypoints",
        lambda d: [{**_without(d, i, "bbox")[i], "segmentation": {}} for i in range(len(d))],
    ),
    "not a list": ("bbox", lambda d: {"annotations": d}),
    "truncated": ("bbox", None),
}


@pytest.mark.parametrize("case", OUTSIDE)
def test_files_outside_the_schema_are_left_to_the_general_reader(generated, tmp_path, case):
    iou_type, edit = OUTSIDE[case]
    _, dets = generated[iou_type]
    path = tmp_path / "results.json"
    if edit is None:
        path.write_text(json.dumps(dets)[:-10])
    else:
        path.write_text(json.dumps(edit(dets)))
    assert results_reader.read_result_columns(path, iou_type) is None


def test_without_msgspec_files_are_read_the_general_way(generated, tmp_path, monkeypatch):
    gt, dets = generated["bbox"]
    gt_path, results_path = _write(tmp_path, gt, dets)
    monkeypatch.setattr(results_reader, "msgspec", None)
    assert results_reader.read_result_columns(results_path, "bbox") is None
    stats = coco_evaluate(gt_path, results_path, "bbox", engine="vectorized", verbose=False).stats
    assert stats == coco_evaluate(gt, dets, "bbox", engine="vectorized", verbose=False).stats


@pytest.mark.parametrize(
    ("iou_type", "edit", "named"),
    [
        ("bbox", lambda g, d: _edit(d, 7, image_id=10**6), r"Detection 7 is on image_id 1000000"),
        ("bbox", lambda g, d: _edit(d, 7, bbox=[1.0, 2.0, -3.0, 4.0]), r"Detection 7 .*negative"),
        ("keypoints", lambda g, d: [{**x, "keypoints": x["keypoints"][:6]} for x in d],
         r"Detection 0 .*6 keypoint values"),
        ("segm", lambda g, d: _edit(d, 7, segmentation={**d[7]["segmentation"], "size": [3, 4]}),
         r"Detection 7 .*RLE size \[3, 4\] differs"),
        ("segm", lambda g, d: _edit(d, 7, segmentation={**d[7]["segmentation"], "counts": "0"}),
         r"Detection 7 .*sum to 0 pixels"),
    ],
)  # fmt: skip
def test_values_the_check_refuses_are_named_as_before(generated, tmp_path, iou_type, edit, named):
    # Within the schema but refused by the check: the file is read again the general way, whose
    # check names the detection exactly as it names it in memory.
    gt, dets = generated[iou_type]
    bad = edit(gt, dets)
    assert results_reader.read_result_columns(_write(tmp_path, gt, bad)[1], iou_type) is not None
    for engine in ENGINES:
        with pytest.raises(ValueError, match=named) as from_memory:
            coco_evaluate(gt, bad, iou_type, engine=engine, verbose=False)
        with pytest.raises(ValueError, match=named) as from_files:
            coco_evaluate(*_write(tmp_path, gt, bad), iou_type, engine=engine, verbose=False)
        assert str(from_files.value) == str(from_memory.value)


def test_empty_file_and_folder_are_left_to_the_general_reader(generated, tmp_path):
    gt, _ = generated["bbox"]
    empty = tmp_path / "results.json"
    empty.write_bytes(b"")
    assert results_reader.read_result_columns(empty, "bbox") is None  # mmap refuses 0 bytes
    assert results_reader.read_result_columns(tmp_path, "bbox") is None
    with pytest.raises(ValueError, match="results.json' is not valid JSON"):
        coco_evaluate(gt, empty, "bbox", verbose=False)


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_image_subset_and_max_dets_from_files_equal_in_memory(generated, tmp_path, iou_type):
    gt, dets = generated[iou_type]
    paths = _write(tmp_path, gt, dets)
    img_ids = [image["id"] for image in gt["images"]][1::2]
    max_dets = [20] if iou_type == "keypoints" else [1, 5, 100]
    for engine in ENGINES:
        options = dict(engine=engine, img_ids=img_ids, max_dets=max_dets, verbose=False)
        if engine == "hotcoco" and iou_type != "keypoints":
            options["max_dets"] = None  # hotcoco's summary differs there (refused by name)
        in_memory = coco_evaluate(gt, dets, iou_type, **options)
        from_files = coco_evaluate(*paths, iou_type, **options)
        assert from_files.stats == in_memory.stats
        np.testing.assert_array_equal(from_files.precision, in_memory.precision)
