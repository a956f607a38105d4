"""``ExportedPredictor`` over ``export_detector``'s files gives ``Predictor``'s detections on real
COCO photos (``../shared/data/coco_person_val2017``): the recipe's test resize, padding, the
exported graph and the post-step together. Faster R-CNN (ResNet-18 FPN, seeded random weights,
score threshold 0), test resize short edge 192 / long edge 320, exported at 192x288 with dynamic
sizes: the photos become 192x289 and 192x320-ish, neither the export size. Also the command's
usage errors (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lazydet.config import compose
from lazydet.config.command_line import UsageError
from lazydet.deploy import ExportedPredictor, export_detector
from lazydet.evaluation.predictor import Predictor

PHOTOS = ("000000000785.jpg", "000000040083.jpg", "000000197388.jpg")


def small_predictor() -> Predictor:
    cfg = compose(
        "faster_rcnn_fpn",
        [
            "model.backbone=resnet18",
            "model.roi_heads.box_head.fc_dims=[64,64]",
            "dataset.test_short_edge=192",
            "dataset.max_size=320",
        ],
    )
    torch.manual_seed(0)
    predictor = Predictor.from_config(cfg, weights="random", device="cpu", batch_size=1)
    predictor.model.roi_heads.box_predictor.test_score_thresh = 0.0
    return predictor


def assert_same_instances(got, expected) -> None:
    assert got.image_size == expected.image_size
    assert len(got) == len(expected) > 0
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-3)
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-4)
    assert torch.equal(got.pred_classes, expected.pred_classes)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torch_export", "onnx"])
def test_exported_predictor_matches_predictor_on_photos(fmt, shared_data, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    predictor = small_predictor()
    path = export_detector(predictor, format=fmt, output_dir=tmp_path, height=192, width=288)
    metadata = json.loads(path.with_suffix(".json").read_text())
    assert metadata["resize"] == {"size": 192, "max_size": 320}
    assert metadata["dynamic"] and metadata["min_size"] == 65 and metadata["max_size"] == 1344
    exported = ExportedPredictor(path=path)
    assert exported.metadata == metadata  # the copy inside the model file
    photos = [shared_data / "coco_person_val2017" / name for name in PHOTOS]
    for photo in photos:
        assert_same_instances(exported(str(photo)), predictor(str(photo)))
    # The command runs it too: python -m lazydet.predict exported=... input=... output=...
    from lazydet.predict import run

    assert run([f"exported={path}", f"input={photos[0]}", f"output={tmp_path / 'pictures'}"]) == 0
    assert (tmp_path / "pictures" / f"{photos[0].stem}.png").is_file()
    with pytest.raises(ValueError, match="exists"):
        export_detector(predictor, format=fmt, output_dir=tmp_path, height=192, width=288)


def test_export_command_usage_errors(tmp_path):
    from lazydet.export import run

    with pytest.raises(UsageError, match="format="):
        run([f"output={tmp_path}", "checkpoint=x.pth"])
    with pytest.raises(UsageError, match="output="):
        run(["format=onnx", "checkpoint=x.pth"])
    with pytest.raises(UsageError, match="dynamic="):
        run(["format=onnx", f"output={tmp_path}", "dynamic=maybe", "checkpoint=x.pth"])
    with pytest.raises(UsageError, match="height="):
        run(["format=onnx", f"output={tmp_path}", "height=big", "checkpoint=x.pth"])
    assert not any(tmp_path.iterdir())


def test_exported_predictor_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        ExportedPredictor(path=tmp_path / "missing.pt2")
    other = tmp_path / "model.bin"
    other.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"\.pt2.*\.onnx"):
        ExportedPredictor(path=other)


def test_exported_predictor_checks_the_size_range_before_running():
    predictor = ExportedPredictor.__new__(ExportedPredictor)  # the checks only, no model file
    predictor.path = Path("model.pt2")
    predictor.metadata = {
        "dynamic": True,
        "min_size": 65,
        "max_size": 1344,
        "export_size": [800, 1088],
    }
    predictor._check_size(800, 1066, "image 0")
    with pytest.raises(
        ValueError, match="image 3: after resizing it is 64x100, outside the 65-1344"
    ):
        predictor._check_size(64, 100, "image 3")
    predictor.metadata["dynamic"] = False
    predictor._check_size(800, 1088, "image 0")
    with pytest.raises(ValueError, match=r"fixed size \[800, 1088\]"):
        predictor._check_size(800, 1066, "image 0")
