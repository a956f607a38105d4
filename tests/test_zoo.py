"""The conf/ zoo: every experiment composes with every backbone option and runs a forward pass."""

from __future__ import annotations

import pytest
import torch

from lazydet.config import compose, instantiate
from lazydet.config.tree import ConfigTree, builtin_config_root, load_experiment

ZOO = ConfigTree((builtin_config_root(),))


def _chooses_a_backbone(experiment: str) -> bool:
    _, defaults = load_experiment(ZOO, experiment)
    return any(
        key.strip("/") == "model/backbone"
        for entry in defaults
        if isinstance(entry, dict)
        for key in entry
    )


# Experiments that write their backbone out (the detectron2_* presets, quickstart) have no
# backbone choice; the torchvision_* presets are the R-CNN experiments with torchvision's numerics,
# which the equivalence tests cover.
EXPERIMENTS = [
    e for e in ZOO.experiments() if _chooses_a_backbone(e) and not e.startswith("torchvision_")
]
BACKBONES = ZOO.groups()["model/backbone"]


def test_zoo_has_the_promised_options():
    assert {"resnet18", "resnet50", "resnet101", "vit_b", "vit_l"} <= set(BACKBONES)
    assert {"sgd", "adamw"} <= set(ZOO.groups()["optimizer"])
    assert {"1x", "3x"} <= set(ZOO.groups()["schedule"])
    assert {"coco2017", "coco2017_keypoints", "voc2012", "shapes"} <= set(ZOO.groups()["dataset"])


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_with_every_backbone(experiment, backbone, monkeypatch):
    monkeypatch.delenv("LAZYDET_CONFIG_PATH", raising=False)
    overrides = ["dataset=shapes", f"model.backbone={backbone}"]
    if backbone.startswith("resnet"):
        # Random weights with FrozenBN's identity statistics grow the activations with depth
        # (1e5 at p2 for ResNet-101), which saturates the heads into "no detection"; GroupNorm
        # keeps an untrained network in range, so the checks below see real detections.
        overrides.append("model.backbone.bottom_up.norm=GN")
    cfg = compose(experiment, overrides)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    if hasattr(model, "score_threshold"):
        # At initial weights every class probability is RetinaNet's prior 0.01, under the default
        # 0.05 threshold: without this the checks below would look at an empty tensor.
        model.score_threshold = 0.0
    shapes = model.backbone.output_shape()
    assert {"p2", "p3", "p4", "p5", "p6"} <= set(shapes)
    assert all(
        shapes[f"p{k}"].channels == 256 and shapes[f"p{k}"].stride == 2**k for k in range(2, 7)
    )
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    with torch.inference_mode():
        (output,) = model([{"image": image, "height": 48, "width": 64}])
    instances = output["instances"]
    assert instances.image_size == (48, 64)
    assert len(instances) > 0
    boxes = instances.pred_boxes.tensor
    assert boxes.shape[1] == 4 and torch.isfinite(boxes).all()
    assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all() and (boxes >= 0).all()
    assert ((boxes[:, 2:] > boxes[:, :2]).all(dim=1)).all()  # detections with an area
    assert ((instances.scores >= 0) & (instances.scores <= 1)).all()
    assert ((instances.pred_classes >= 0) & (instances.pred_classes < 3)).all()
    if instances.has("pred_masks"):
        assert instances.pred_masks.shape == (len(instances), 48, 64)
    if instances.has("pred_keypoints"):
        assert instances.pred_keypoints.shape == (len(instances), 4, 3)


@pytest.mark.parametrize("experiment", [e for e in ZOO.experiments() if e != "quickstart"])
def test_every_coco_experiment_evaluates_coco_ap_on_its_test_split(experiment, monkeypatch):
    """The trainer's eval hook and ``python -m lazydet.evaluate`` read ``evaluator``: every
    experiment (and every detectron2_/torchvision_ preset built on one) declares it, on the
    dataset group's test split (``dataset=voc2012`` moves it along)."""
    monkeypatch.delenv("LAZYDET_CONFIG_PATH", raising=False)
    cfg = compose(experiment, [])
    assert cfg.evaluator._target_ == "lazydet.evaluation.COCOEvaluator"
    from lazydet.config.interpolation import resolve

    expected = "keypoints_coco_2017_val" if "keypoint" in experiment else "coco_2017_val"
    assert resolve(cfg.evaluator).dataset_name == expected
    moved = compose(experiment, ["dataset=voc2012"])
    assert resolve(moved.evaluator).dataset_name == "voc_2007_test"
