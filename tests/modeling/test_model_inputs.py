"""Bad model inputs (the issue's probe list) give one clear error naming the input, the field and
the value, for every meta-architecture, and the inference entry point is the same for all."""

from __future__ import annotations

import math

import pytest
import torch

from lazydet.config import compose, instantiate
from lazydet.structures import Boxes, Instances

# The zoo's two meta-architectures on the smallest backbone option, 3 classes.
EXPERIMENTS = ("retinanet_fpn", "faster_rcnn_fpn")


@pytest.fixture(scope="module", params=EXPERIMENTS)
def model(request):
    cfg = compose(request.param, ["dataset=shapes", "model.backbone=resnet18"])
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _image(height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8)


def _target(boxes, classes) -> Instances:
    return Instances(
        (64, 64),
        gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        gt_classes=torch.tensor(classes, dtype=torch.int64),
    )


def _train_batch(boxes, classes) -> list[dict]:
    good = {"image": _image(), "instances": _target([[4, 4, 40, 40]], [0])}
    return [good, {"image": _image(), "instances": _target(boxes, classes)}]


@pytest.mark.parametrize("size", [(0, 64), (64, 0)])
def test_empty_image_is_refused_before_the_backbone(model, size) -> None:
    name = type(model).__name__
    model.eval()
    with pytest.raises(
        ValueError, match=rf"{name} input 1 has an empty image of {size[0]}x{size[1]}"
    ):
        model([{"image": _image()}, {"image": torch.zeros(3, *size, dtype=torch.uint8)}])
    model.train()
    with pytest.raises(ValueError, match="input 0 has an empty image"):
        model([{"image": torch.zeros(3, *size), "instances": _target([], [])}])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_pixels_are_refused(model, bad) -> None:
    image = _image().float()
    image[1, 5, 7] = bad
    model.eval()
    with pytest.raises(ValueError, match=r"input\(s\) \[1\] have NaN or infinite pixel values"):
        model([{"image": _image()}, {"image": image}])


@pytest.mark.parametrize(
    ("classes", "shown"), [([7], r"\[7\]"), ([-1], r"\[-1\]"), ([0, 3], r"\[3\]")]
)
def test_class_ids_outside_the_model_classes_are_refused(model, classes, shown) -> None:
    # 3 classes: 7 was a bare IndexError, -1 silently an ignore region, 3 the background id.
    boxes = [[4, 4, 30, 30]] * len(classes)
    model.train()
    with pytest.raises(ValueError, match=rf"input 1: gt_classes {shown} .*outside \[0, 3\)"):
        model(_train_batch(boxes, classes))


def test_non_finite_gt_boxes_are_refused(model) -> None:
    model.train()
    with pytest.raises(ValueError, match=r"input 1: gt_boxes \[1\] have NaN or infinite"):
        model(_train_batch([[4, 4, 30, 30], [math.nan, 4, 30, 30]], [0, 1]))
    with pytest.raises(ValueError, match="gt_classes must hold integer class ids"):
        batch = _train_batch([[4, 4, 30, 30]], [0])
        batch[1]["instances"].gt_classes = torch.tensor([0.0])
        model(batch)
    with pytest.raises(ValueError, match="input 0 has none"):
        model([{"image": _image()}])


def test_bad_output_size_is_refused(model) -> None:
    model.eval()
    for value in (0, -3, 2.5, "64"):
        with pytest.raises(ValueError, match=f"input 0 has height={value!r}"):
            model([{"image": _image(), "height": value, "width": 64}])


def test_valid_training_batch_still_trains(model) -> None:
    """The checks let a good batch through: empty targets and every valid class id."""
    model.train()
    losses = model(_train_batch([[4, 4, 30, 30], [10, 10, 60, 50], [0, 0, 8, 8]], [0, 1, 2]))
    assert losses and all(torch.isfinite(v) for v in losses.values())


def test_one_inference_signature_for_every_detector(model) -> None:
    """``inference(batched_inputs, do_postprocess=...)``, as a predictor calls any detector."""
    model.eval()
    # RetinaNet's initial class probability is 0.01, under its default 0.05 threshold.
    threshold = getattr(model, "score_threshold", None)
    if threshold is not None:
        model.score_threshold = 0.0
    inputs = [{"image": _image(64, 96), "height": 32, "width": 48}]
    with torch.no_grad():
        resized = model.inference(inputs)[0]["instances"]
        raw = model.inference(inputs, do_postprocess=False)[0]["instances"]
        via_forward = model(inputs)[0]["instances"]
    if threshold is not None:
        model.score_threshold = threshold
    assert len(raw) > 0
    assert resized.image_size == (32, 48) and raw.image_size == (64, 96)
    assert torch.equal(resized.pred_boxes.tensor, via_forward.pred_boxes.tensor)
    # Rescaling halves both axes here (and clips, which cannot matter for boxes in the image).
    torch.testing.assert_close(
        resized.pred_boxes.tensor, raw[raw.pred_boxes.nonempty()].pred_boxes.tensor / 2
    )


def test_nan_nms_threshold_is_refused_at_inference(model) -> None:
    """A NaN IoU threshold compares False with every IoU and would suppress nothing."""
    model.eval()
    if hasattr(model, "nms_threshold"):
        model.nms_threshold = math.nan
    else:
        model.roi_heads.box_predictor.test_nms_thresh = math.nan
    try:
        with pytest.raises(ValueError, match="iou_threshold is NaN"), torch.no_grad():
            model([{"image": _image()}])
    finally:
        if hasattr(model, "nms_threshold"):
            model.nms_threshold = 0.5
        else:
            model.roi_heads.box_predictor.test_nms_thresh = 0.5
