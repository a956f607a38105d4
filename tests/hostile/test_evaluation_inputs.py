"""Crafted inputs for ``coco_evaluate``: every engine gives pycocotools' numbers or refuses.

Each probe case (issue #22) is a parametrized case below: the input is either refused with a
``ValueError`` naming the entry, or scored by every engine exactly as pycocotools scores it. A
seeded property test then generates random valid and broken inputs and asserts the same for
every engine, in one subprocess with a timeout (pycocotools' C code hangs on some broken masks).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import pycocotools_evaluate
from pycocotools import mask as mask_utils
from synthetic_coco import keypoints_subset, synthetic_coco

from lazydet.evaluation import coco_evaluate
from lazydet.evaluation.coco_eval import hotcoco_available

ENGINES = ["auto", "vectorized", "pycocotools"] + (["hotcoco"] if hotcoco_available() else [])


@pytest.fixture(scope="module")
def data():
    gt, dets = synthetic_coco(6, objects_per_image=3.0, detections_per_image=30, seed=5)
    return {"bbox": (gt, dets), "segm": (gt, dets), "keypoints": keypoints_subset(gt, dets)}


def _rle_counts(gt, ann):
    image = next(i for i in gt["images"] if i["id"] == ann["image_id"])
    h, w = image["height"], image["width"]
    return h, w


# --- inputs that pycocotools defines: every engine gives its numbers (or the inexact one is
# refused by name, and auto avoids it) ---------------------------------------------------------


def _ids_from_zero(gt, dets):
    for i, a in enumerate(gt["annotations"]):
        a["id"] = i


def _repeated_id(gt, dets):
    gt["annotations"][3]["id"] = gt["annotations"][2]["id"]


def _string_image_ids(gt, dets):
    name = {img["id"]: f"img-{img['id']:03d}" for img in gt["images"]}
    for img in gt["images"]:
        img["id"] = name[img["id"]]
    for a in gt["annotations"] + dets:
        a["image_id"] = name[a["image_id"]]


DEFINED = {
    "gt ids start at 0": _ids_from_zero,
    "repeated gt id": _repeated_id,
    "string image ids": _string_image_ids,
}


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
@pytest.mark.parametrize("case", DEFINED)
@pytest.mark.parametrize("engine", ENGINES)
def test_defined_inputs_give_pycocotools_numbers(data, case, iou_type, engine):
    gt, dets = copy.deepcopy(data[iou_type])
    DEFINED[case](gt, dets)
    reference = pycocotools_evaluate(gt, dets, iou_type).stats
    if engine == "hotcoco" and case != "string image ids":
        with pytest.raises(ValueError, match="would not give pycocotools' numbers"):
            coco_evaluate(gt, dets, iou_type, engine=engine, verbose=False)
        return
    result = coco_evaluate(gt, dets, iou_type, engine=engine, verbose=False)
    np.testing.assert_allclose(result.stats, reference, rtol=0, atol=1e-12)
    if engine == "auto" and case != "string image ids":
        assert result.engine != "hotcoco"


# --- inputs that are refused, naming the entry -------------------------------------------------


def _gt_ann(iou_type, field, value, index=4):
    def edit(gt, dets):
        gt["annotations"][index][field] = value(gt, gt["annotations"][index])

    return edit


def _det(field, value, index=2):
    def edit(gt, dets):
        dets[index][field] = value(gt, dets[index])

    return edit


def _uncompressed(delta):
    def value(gt, ann):
        h, w = _rle_counts(gt, ann)
        return {"size": [h, w], "counts": [h * w // 2, h * w - h * w // 2 + delta]}

    return value


def _doubled(gt, ann):
    h, w = _rle_counts(gt, ann)
    counts = mask_utils.encode(np.asfortranarray(np.ones((h, w), np.uint8)))["counts"].decode()
    return {"size": [h, w], "counts": counts * 2}


def _past_hw(gt, ann):
    h, w = _rle_counts(gt, ann)
    return {"size": [h, w], "counts": [h * w, h * w]}


NAN = float("nan")
REFUSED = {
    # (iou type, edit, what the message names)
    "gt keypoints NaN": ("keypoints", _gt_ann("keypoints", "keypoints", lambda g, a: [NAN] * 51, index=0), r"annotation 0 \(id"),
    "det keypoints NaN": ("keypoints", _det("keypoints", lambda g, d: [NAN, *d["keypoints"][1:]]), r"Detection 2 "),
    "gt area NaN": ("bbox", _gt_ann("bbox", "area", lambda g, a: NAN), r"annotation 4 \(id .*area nan"),
    "gt area missing": ("bbox", lambda g, d: g["annotations"][4].pop("area"), r"annotation 4 \(id .*area None"),
    "gt garbage RLE": ("segm", _gt_ann("segm", "segmentation", lambda g, a: {"size": [g["images"][0]["height"], g["images"][0]["width"]], "counts": "~~garbage~~"}), r"annotation 4 \(id"),
    "det garbage RLE": ("segm", _det("segmentation", lambda g, d: {**d["segmentation"], "counts": "~~garbage~~"}), r"Detection 2 "),
    "gt RLE sums below h*w": ("segm", _gt_ann("segm", "segmentation", _uncompressed(-5)), r"annotation 4 .*sum to"),
    "gt RLE sums past h*w": ("segm", _gt_ann("segm", "segmentation", _past_hw), r"annotation 4 .*sum to"),
    "gt RLE doubled counts": ("segm", _gt_ann("segm", "segmentation", _doubled), r"annotation 4 .*sum to"),
    "det RLE doubled counts": ("segm", _det("segmentation", _doubled), r"Detection 2 .*sum to"),
    "det RLE past h*w": ("segm", _det("segmentation", _past_hw), r"Detection 2 .*sum to"),
    "gt odd polygon": ("segm", _gt_ann("segm", "segmentation", lambda g, a: [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]), r"annotation 4 .*coordinates"),
    "gt NaN polygon": ("segm", _gt_ann("segm", "segmentation", lambda g, a: [[1.0, 2.0, NAN, 4.0, 5.0, 6.0]]), r"annotation 4 .*NaN"),
    "gt empty polygon list": ("segm", _gt_ann("segm", "segmentation", lambda g, a: []), r"annotation 4 .*neither a polygon list nor an RLE"),
    "gt polygon with text": ("segm", _gt_ann("segm", "segmentation", lambda g, a: [[1.0, 2.0, "3", 4.0, 5.0, 6.0]]), r"annotation 4 .*not a flat list of numbers"),
    "gt polygon with a bool": ("segm", _gt_ann("segm", "segmentation", lambda g, a: [[1.0, 2.0, True, 4.0, 5.0, 6.0]]), r"annotation 4 .*not a flat list of numbers"),
    "gt polygon sum past float64": ("segm", _gt_ann("segm", "segmentation", lambda g, a: [[1e308] * 6]), r"annotation 4 .*NaN or infinite"),
    "gt second polygon short": ("segm", _gt_ann("segm", "segmentation", lambda g, a: [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 2.0]]), r"annotation 4 .*coordinates"),
    "det NaN polygon": ("segm", _det("segmentation", lambda g, d: [[1.0, 2.0, NAN, 4.0, 5.0, 6.0]]), r"Detection 2 .*NaN"),
    "first result bbox []": ("bbox", _det("bbox", lambda g, d: [], index=0), r"Detection 0 .*bbox \[\]"),
    "det bbox NaN": ("bbox", _det("bbox", lambda g, d: [1.0, 2.0, NAN, 4.0], index=9), r"Detection 9 .*bbox"),
    "mixed int/str image ids": ("bbox", lambda g, d: g["images"][1].update(id=str(g["images"][1]["id"])), r"mix integers and strings"),
}  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", REFUSED)
def test_broken_inputs_are_refused_by_entry(data, case, engine):
    iou_type, edit, named = REFUSED[case]
    gt, dets = copy.deepcopy(data[iou_type])
    edit(gt, dets)
    with pytest.raises(ValueError, match=named):
        coco_evaluate(gt, dets, iou_type, engine=engine, verbose=False)


@pytest.mark.parametrize("engine", ["auto", "vectorized"])
@pytest.mark.parametrize("case", REFUSED)
def test_broken_files_are_refused_by_entry_as_in_memory(data, case, engine, tmp_path):
    # From files the results are read straight into arrays (msgspec) when they fit the schema:
    # whatever the check refuses is read again the general way, so the message is the same.
    iou_type, edit, named = REFUSED[case]
    gt, dets = copy.deepcopy(data[iou_type])
    edit(gt, dets)
    gt, dets = json.loads(json.dumps(gt)), json.loads(json.dumps(dets))  # as a file holds them
    with pytest.raises(ValueError, match=named) as from_memory:
        coco_evaluate(gt, dets, iou_type, engine=engine, verbose=False)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(dets))
    with pytest.raises(ValueError, match=named) as from_files:
        coco_evaluate(
            tmp_path / "gt.json", tmp_path / "results.json", iou_type, engine=engine,
            verbose=False,
        )  # fmt: skip
    assert str(from_files.value) == str(from_memory.value)


def test_latin1_file_is_one_clear_error(tmp_path, data):
    gt, dets = data["bbox"]
    gt = copy.deepcopy(gt)
    gt["categories"][0]["name"] = "pe\xf1a"
    path = tmp_path / "gt.json"
    path.write_bytes(json.dumps(gt, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=r"gt.json' is not UTF-8 .*re-save it as UTF-8"):
        coco_evaluate(path, dets, "bbox", verbose=False)


# --- property: random valid and broken inputs ---------------------------------------------------


SEEDS = 9  # each scored by every engine; one subprocess for all: a few seconds in all


def test_random_inputs_equal_pycocotools_or_are_refused():
    """SEEDS seeded inputs (a few images; a third broken in one random way), each given to every
    engine, all in ONE subprocess (one interpreter start, one import of the engines) with a
    timeout, so that a hang fails the test, naming the seed and engine, instead of blocking it."""
    script = "\n".join(
        [
            "import json, sys",
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})",
            "from hostile_cases import case, reference",
            "from lazydet.evaluation import coco_evaluate",
            f"for seed in range({SEEDS}):",
            "    gt, dets, iou_type = case(seed)",
            "    ref = None",
            f"    for engine in {ENGINES!r}:",
            "        print(json.dumps({'seed': seed, 'engine': engine}), flush=True)",
            "        try:",
            "            stats = coco_evaluate(gt, dets, iou_type, engine=engine, verbose=False).stats",
            "        except ValueError as e:",
            "            row = {'seed': seed, 'engine': engine, 'refused': str(e)}",
            "            print(json.dumps(row), flush=True); continue",
            "        ref = reference(gt, dets, iou_type) if ref is None else ref",
            "        row = {'seed': seed, 'engine': engine, 'stats': stats, 'reference': ref}",
            "        print(json.dumps(row), flush=True)",
        ]
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines = stdout.splitlines()
        pytest.fail(f"coco_evaluate hung on {lines[-1] if lines else 'the first case'}")
    assert out.returncode == 0, out.stderr[-3000:]
    outcomes: dict[int, dict[str, str]] = {}
    for line in out.stdout.splitlines():
        row = json.loads(line)
        if "refused" in row:
            outcomes.setdefault(row["seed"], {})[row["engine"]] = "refused"
        elif "stats" in row:
            outcomes.setdefault(row["seed"], {})[row["engine"]] = "scored"
            np.testing.assert_allclose(
                row["stats"],
                row["reference"],
                rtol=0,
                atol=1e-12,
                err_msg=f"seed {row['seed']}, engine {row['engine']}",
            )
    assert sorted(outcomes) == list(range(SEEDS)), sorted(outcomes)
    for seed, by_engine in outcomes.items():
        assert sorted(by_engine) == sorted(ENGINES), (seed, by_engine)
    refused = sum("refused" in by_engine.values() for by_engine in outcomes.values())
    scored = sum("scored" in by_engine.values() for by_engine in outcomes.values())
    assert refused >= 1 and scored >= 3, (refused, scored)
