"""``lazydet.evaluate`` and ``lazydet.predict conf=`` compute with the weights they are given, and
write the dataset's own category ids.

The model is ``BoxOracle`` (oracle_model.py): its prediction is its weights (one box, one class),
so each checkpoint has a known AP on a two-image COCO json whose category ids are 1, 3 and 7 (not
contiguous): the exact box of class 7 scores AP 100, the box shifted to IoU 0.62 scores AP50 100,
AP75 0 and AP 30 (3 of the 10 IoU thresholds 0.50:0.05:0.95), the right box with the wrong class
AP 0. A model that never loaded the checkpoint predicts an empty box (AP 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from oracle_model import oracle_weights
from PIL import Image

from lazydet.checkpoint import save_checkpoint

CONF_DIR = Path(__file__).resolve().parent / "oracle_conf"
CATEGORY_IDS = [1, 3, 7]  # contiguous classes 0, 1, 2
GT_BOX = [4.0, 6.0, 12.0, 10.0]  # XYWH, category 7, on both images
EXACT = [4.0, 6.0, 16.0, 16.0]  # the same box, XYXY
SHIFTED = [6.8, 6.0, 18.8, 16.0]  # 2.8 px right: IoU 9.2/14.8 = 0.62


@pytest.fixture
def oracle_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The experiment's command line (``conf=promise_oracle`` on a two-image COCO json)."""
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(CONF_DIR))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    records, annotations = [], []
    for image_id in (1, 2):
        name = f"{image_id}.png"
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(images / name)
        records.append({"id": image_id, "file_name": name, "height": 32, "width": 40})
        annotations.append(
            {"id": image_id, "image_id": image_id, "category_id": 7, "bbox": GT_BOX,
             "area": GT_BOX[2] * GT_BOX[3], "iscrowd": 0}
        )  # fmt: skip
    categories = [{"id": i, "name": f"class{i}"} for i in CATEGORY_IDS]
    annotation_file = tmp_path / "annotations.json"
    annotation_file.write_text(
        json.dumps({"images": records, "annotations": annotations, "categories": categories})
    )
    return [
        "conf=promise_oracle",
        f"dataset.train_json={annotation_file}",
        f"dataset.train_images={images}",
        f"dataset.test_json={annotation_file}",
        f"dataset.test_images={images}",
    ]


def _checkpoint(path: Path, box: list[float], class_index: int) -> Path:
    save_checkpoint(path, {"model": oracle_weights(box, class_index, len(CATEGORY_IDS))})
    return path


def test_evaluate_scores_the_weights_it_is_given(tmp_path, oracle_dataset) -> None:
    from lazydet.evaluate import run

    expected = {  # checkpoint -> (AP, AP50, AP75)
        _checkpoint(tmp_path / "exact.pth", EXACT, 2): (100.0, 100.0, 100.0),
        _checkpoint(tmp_path / "shifted.pth", SHIFTED, 2): (30.0, 100.0, 0.0),
        _checkpoint(tmp_path / "wrong_class.pth", EXACT, 0): (0.0, 0.0, 0.0),
    }
    for checkpoint, (ap, ap50, ap75) in expected.items():
        out = tmp_path / f"eval_{checkpoint.stem}"
        results = run([*oracle_dataset, f"train.init_checkpoint={checkpoint}", f"output={out}"])
        bbox = results["bbox"]
        assert (bbox["AP"], bbox["AP50"], bbox["AP75"]) == pytest.approx((ap, ap50, ap75)), (
            checkpoint.name
        )
        assert json.loads((out / "metrics.json").read_text())["bbox"]["AP"] == pytest.approx(ap)
        # The detections written are the checkpoint's box, in the dataset's category ids.
        written = json.loads((out / "coco_instances_results.json").read_text())
        assert sorted(d["image_id"] for d in written) == [1, 2]
        class_index = 0 if checkpoint.stem == "wrong_class" else 2
        for detection in written:
            assert detection["category_id"] == CATEGORY_IDS[class_index]
            box = EXACT if checkpoint.stem != "shifted" else SHIFTED
            x0, y0, x1, y1 = box
            assert detection["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])


def test_predict_conf_writes_the_dataset_category_ids(tmp_path, oracle_dataset) -> None:
    from lazydet.predict import run

    checkpoint = _checkpoint(tmp_path / "exact.pth", EXACT, 2)
    images = Path(oracle_dataset[2].split("=", 1)[1])
    results_json = tmp_path / "predicted.json"
    code = run(
        [*oracle_dataset, f"train.init_checkpoint={checkpoint}", f"input={images}",
         f"output={tmp_path / 'pictures'}", f"results={results_json}"]
    )  # fmt: skip
    assert code == 0
    written = json.loads(results_json.read_text())
    assert len(written) == 2
    # Class 2 of the model is category 7 of the json (contiguous ids would write 2).
    assert [d["category_id"] for d in written] == [7, 7]
    assert all(d["bbox"] == pytest.approx(GT_BOX) for d in written)
