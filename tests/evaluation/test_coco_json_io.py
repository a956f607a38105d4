"""Reading and writing COCO json for evaluation (``coco_input.parse_json``,
``coco_eval.write_results_json``): orjson where installed, the standard library otherwise, the
same objects and the same numbers either way."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_coco import keypoints_subset, synthetic_coco

from lazydet.evaluation import coco_eval, coco_evaluate, coco_input


@pytest.fixture(scope="module")
def generated():
    gt, dets = synthetic_coco(8, objects_per_image=4.0, detections_per_image=25, seed=3)
    return json.loads(json.dumps(gt)), json.loads(json.dumps(dets))  # plain json types


@pytest.fixture(params=["orjson", "json"])
def parser(request, monkeypatch):
    if request.param == "json":
        monkeypatch.setattr(coco_input, "orjson", None)
        monkeypatch.setattr(coco_eval, "orjson", None)
    elif coco_input.orjson is None:
        pytest.skip("orjson is not installed")
    return request.param


def test_parse_gives_what_json_gives(generated, parser):
    gt, dets = generated
    for value in (gt, dets, {"a": [1, 2.5, "é", None, True]}):
        text = json.dumps(value, ensure_ascii=False)
        assert coco_input.parse_json(text.encode("utf-8")) == json.loads(text)


def test_nan_literal_is_parsed_then_refused_by_entry(generated, parser, tmp_path):
    # json.dump writes NaN as a bare literal, which orjson refuses: the standard library reads
    # it, and the check names the detection, as before orjson.
    gt, dets = generated
    bad = [dict(d) for d in dets]
    bad[4]["score"] = float("nan")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"Detection 4 \(.*score nan is not finite"):
        coco_evaluate(gt, path, "bbox", verbose=False)


def test_byte_order_mark_and_latin1_are_one_clear_error(generated, parser, tmp_path):
    gt, dets = generated
    path = tmp_path / "results.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(dets).encode())
    with pytest.raises(ValueError, match="results.json' is not valid JSON"):
        coco_evaluate(gt, path, "bbox", verbose=False)
    path.write_bytes(json.dumps([{"x": "pe\xf1a"}], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match="results.json' is not UTF-8"):
        coco_evaluate(gt, path, "bbox", verbose=False)


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_from_files_equals_from_memory(generated, parser, tmp_path, iou_type):
    gt, dets = generated
    if iou_type == "keypoints":
        gt, dets = keypoints_subset(gt, dets)
    written = coco_eval.write_results_json(dets, tmp_path / "results.json")
    assert json.loads(written.read_text()) == dets  # same floats, bit for bit
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    engines = ["vectorized", "pycocotools"] + (["hotcoco"] if coco_eval.hotcoco_available() else [])
    for engine in engines:
        in_memory = coco_evaluate(gt, dets, iou_type, engine=engine, verbose=False)
        from_files = coco_evaluate(gt_path, written, iou_type, engine=engine, verbose=False)
        assert from_files.stats == in_memory.stats
        np.testing.assert_array_equal(from_files.precision, in_memory.precision)


def test_written_results_take_bytes_and_numpy(parser, tmp_path):
    results = [
        {
            "image_id": np.int64(3),
            "category_id": 1,
            "score": np.float32(0.5),
            "bbox": np.array([1.0, 2.0, 3.5, 4.0]),
            "segmentation": {"size": [4, 5], "counts": b"0`0"},
        }
    ]
    path = coco_eval.write_results_json(results, tmp_path / "out.json")
    assert json.loads(path.read_text()) == [
        {
            "image_id": 3,
            "category_id": 1,
            "score": 0.5,
            "bbox": [1.0, 2.0, 3.5, 4.0],
            "segmentation": {"size": [4, 5], "counts": "0`0"},
        }
    ]
    assert not list(tmp_path.glob(".*.tmp"))
