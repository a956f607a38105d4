"""Detectron2's numerics, which lazydet offers beside torchvision's, against hand-computed cases.

Detectron2 cannot be installed in CI, so each behaviour is checked on a case small enough to
work out on paper from Detectron2's definition: its mask paste (``grid_sample`` at pixel centres),
its RetinaNet order (per-class NMS on unclipped boxes, clipped afterwards), its keypoint scores
(softmax probabilities), and the ``detectron2_*`` presets loading a checkpoint with Detectron2's
names and shapes as it is.
"""

from __future__ import annotations

import math

import pytest
import torch

from lazydet.checkpoint import load_weights
from lazydet.config import compose, instantiate
from lazydet.layers import ShapeSpec
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.meta_arch.retinanet import RetinaNet
from lazydet.modeling.postprocessing import (
    detector_postprocess,
    paste_masks_grid_sample,
    paste_masks_in_image,
)
from lazydet.modeling.roi_heads.keypoint_head import heatmaps_to_keypoints
from lazydet.structures import Boxes, Instances

# ---------------------------------------------------------------------------------------------
# Mask paste


def test_grid_sample_paste_of_a_known_box_by_hand() -> None:
    # A 2x2 probability map over the box x 1..5, y 1..3 of a 4x6 image. Pixel centre x + 0.5
    # falls at mask column u = (x + 0.5 - 1) / 4 * 2 - 0.5 (grid_sample, align_corners=False):
    # u = -0.75, -0.25, 0.25, 0.75, 1.25, 1.75 for x = 0..5, blending with 0 outside the map.
    # Rows: v = (y + 0.5 - 1) / 2 * 2 - 0.5 = y - 1 = -1, 0, 1, 2: only rows 1 and 2 are inside.
    a, b, c, d = 0.9, 0.2, 0.6, 1.0
    mask = torch.tensor([[a, b], [c, d]])
    column_weights = torch.tensor(
        [[0.25, 0], [0.75, 0], [0.75, 0.25], [0.25, 0.75], [0, 0.75], [0, 0.25]]
    )  # [x, mask column]
    row_weights = torch.tensor([[0.0, 0], [1, 0], [0, 1], [0, 0]])  # [y, mask row]
    expected = row_weights @ mask @ column_weights.T

    pasted = paste_masks_grid_sample(mask[None], torch.tensor([[1.0, 1.0, 5.0, 3.0]]), (4, 6))

    torch.testing.assert_close(pasted[0], expected, rtol=0, atol=1e-6)
    # torchvision's paste of the same map differs: it grows the box by a zero border and
    # truncates it to whole pixels.
    theirs = paste_masks_in_image(mask[None], torch.tensor([[1.0, 1.0, 5.0, 3.0]]), (4, 6))
    assert not torch.allclose(theirs, pasted)


def test_grid_sample_paste_writes_one_pixel_around_the_box_only() -> None:
    # A uniform 3x3 map over the box x 10..30, y 2..5: u = (x + 0.5 - 10) / 20 * 3 - 0.5, the
    # value is 1 for u in [0, 2] and 1 - distance beyond, so grid_sample alone would still give
    # 0.275 and 0.125 at pixels 8 and 7. Detectron2 (per mask, on CPU) writes only
    # [floor(x1) - 1, ceil(x2) + 1) = [9, 31).
    pasted = paste_masks_grid_sample(
        torch.ones(1, 3, 3), torch.tensor([[10.0, 2.0, 30.0, 5.0]]), (7, 40)
    )[0]
    edge = torch.tensor([0.425, 0.575, 0.725, 0.875])
    expected_row = torch.cat((torch.zeros(9), edge, torch.ones(14), edge.flip(0), torch.zeros(9)))
    # Rows: v = y - 2, so rows 2..4 are inside the map and rows 1 and 5 sit at distance 1.
    expected = torch.zeros(7, 40)
    expected[2:5] = expected_row
    torch.testing.assert_close(pasted, expected, rtol=0, atol=1e-6)


def test_grid_sample_paste_clips_to_the_image_and_skips_empty_boxes() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 7, 7, generator=g)
    boxes = torch.tensor([[-4.5, -3.0, 5.5, 6.0], [3.0, 3.0, 3.0, 8.0], [50.0, 50.0, 60.0, 60.0]])
    pasted = paste_masks_grid_sample(masks, boxes, (10, 12))
    # The first box, pasted into a larger canvas shifted by (8, 8), then cropped back: the same
    # values (pixel centres keep their box coordinates).
    shifted = boxes[:1] + 8.0
    big = paste_masks_grid_sample(masks[:1], shifted, (30, 30))
    torch.testing.assert_close(pasted[0], big[0, 8:18, 8:20], rtol=0, atol=1e-6)
    assert pasted[1:].eq(0).all()  # zero width; outside the image
    assert paste_masks_grid_sample(masks[:0], boxes[:0], (10, 12)).shape == (0, 10, 12)


def test_paste_refuses_nan_boxes_and_bad_shapes() -> None:
    masks = torch.rand(2, 4, 4)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, float("nan"), 3.0, 3.0]])
    for paste in (paste_masks_grid_sample, paste_masks_in_image):
        with pytest.raises(ValueError, match=r"boxes \[1\] have NaN or infinite"):
            paste(masks, boxes, (8, 8))
        with pytest.raises(ValueError, match="masks must be"):
            paste(torch.rand(2, 4, 5), boxes, (8, 8))


def test_detector_postprocess_pastes_the_chosen_way() -> None:
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(2, 14, 14, generator=g)
    boxes = torch.tensor([[2.0, 3.0, 9.5, 8.0], [10.0, 1.0, 30.0, 19.0]])
    result = Instances((20, 32), pred_boxes=Boxes(boxes), pred_masks=masks)
    # Reported at twice the size: boxes doubled, then pasted.
    d2 = detector_postprocess(result, 40, 64, mask_threshold=None, mask_paste="detectron2")
    torch.testing.assert_close(d2.pred_masks, paste_masks_grid_sample(masks, boxes * 2, (40, 64)))
    tv = detector_postprocess(result, 40, 64, mask_threshold=None)
    torch.testing.assert_close(tv.pred_masks, paste_masks_in_image(masks, boxes * 2, (40, 64)))
    binary = detector_postprocess(result, 40, 64, mask_paste="detectron2")
    assert torch.equal(binary.pred_masks, d2.pred_masks >= 0.5)
    with pytest.raises(ValueError, match="mask_paste must be 'torchvision' or 'detectron2'"):
        detector_postprocess(result, 40, 64, mask_paste="grid")


def test_grid_sample_paste_equals_its_definition_on_random_boxes() -> None:
    """The formula of the docstring, evaluated pixel by pixel in float64."""
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(4, 5, 5, generator=g)
    boxes = torch.tensor(
        [[0.3, 1.7, 6.2, 4.1], [2.0, 0.5, 3.1, 9.9], [-2.0, 3.0, 4.0, 12.0], [7.5, 7.5, 11.0, 9.0]]
    )
    pasted = paste_masks_grid_sample(masks, boxes, (10, 11))
    size = masks.shape[-1]
    padded = torch.nn.functional.pad(masks.double(), (1, 1, 1, 1))  # zeros beyond the map
    for n, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        for y in range(10):
            for x in range(11):
                inside = math.floor(x1) - 1 <= x < math.ceil(x2) + 1
                inside &= math.floor(y1) - 1 <= y < math.ceil(y2) + 1
                u = (x + 0.5 - x1) / (x2 - x1) * size - 0.5
                v = (y + 0.5 - y1) / (y2 - y1) * size - 0.5
                value = 0.0
                if inside and -1 < u < size and -1 < v < size:
                    u0, v0 = math.floor(u), math.floor(v)
                    fu, fv = u - u0, v - v0
                    p = padded[n]
                    value = (
                        p[v0 + 1, u0 + 1] * (1 - fu) * (1 - fv)
                        + p[v0 + 1, u0 + 2] * fu * (1 - fv)
                        + p[v0 + 2, u0 + 1] * (1 - fu) * fv
                        + p[v0 + 2, u0 + 2] * fu * fv
                    )
                assert abs(float(pasted[n, y, x]) - float(value)) < 1e-5, (n, y, x)


# ---------------------------------------------------------------------------------------------
# RetinaNet: clip, then NMS (torchvision) or NMS, then clip (Detectron2)


class _OneLevelBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.p3 = torch.nn.Conv2d(3, 4, 8, stride=8)

    def forward(self, images):
        return {"p3": self.p3(images)}

    def output_shape(self):
        return {"p3": ShapeSpec(channels=4, stride=8)}

    @property
    def size_divisibility(self) -> int:
        return 8


def _retinanet(clip_before_nms: bool) -> RetinaNet:
    return RetinaNet(
        backbone=_OneLevelBackbone(),
        head_in_features=["p3"],
        anchor_generator=DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[1.0]),
        num_classes=2,
        clip_before_nms=clip_before_nms,
    ).eval()


def test_retinanet_clip_order_by_hand() -> None:
    # Four candidates of a 20x20 image, decoded with zero deltas (boxes = anchors). Class 0:
    # A and B are one box once clipped (IoU 1) but overlap 100 / 400 = 0.25 unclipped. Class 1:
    # C and D share most of their area outside the image (IoU 52 / 60 = 0.87 unclipped) but
    # only 20 / 100 = 0.2 inside it.
    anchors = Boxes(
        torch.tensor([[-30.0, 0, 10, 10], [0, 0, 10, 10], [-50, 0, 2, 10], [-50, 0, 10, 10]])
    )
    probability = torch.full((1, 4, 2), 1e-6)
    probability[0, 0, 0], probability[0, 1, 0] = 0.9, 0.8
    probability[0, 2, 1], probability[0, 3, 1] = 0.7, 0.6
    logits = torch.logit(probability)
    deltas = torch.zeros(1, 4, 4)

    def detections(clip_before_nms: bool) -> tuple[list, list, list]:
        (result,) = _retinanet(clip_before_nms).decode_detections(
            [anchors], [logits], [deltas], [(20, 20)]
        )
        order = result.scores.argsort(descending=True)
        return (
            result.pred_boxes.tensor[order].tolist(),
            [round(s, 4) for s in result.scores[order].tolist()],
            result.pred_classes[order].tolist(),
        )

    # torchvision: clip, then NMS (0.5): B goes (IoU 1 with A); C and D both stay (IoU 0.2).
    assert detections(True) == (
        [[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 10, 10]],
        [0.9, 0.7, 0.6],
        [0, 1, 1],
    )
    # Detectron2: NMS on unclipped boxes, then clip: A and B stay (0.25); D goes (0.87).
    assert detections(False) == (
        [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 2, 10]],
        [0.9, 0.8, 0.7],
        [0, 0, 1],
    )


# ---------------------------------------------------------------------------------------------
# Presets: Detectron2's checkpoints load as they are


def _detectron2_retinanet_r50_fpn_names(num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """Names and shapes of Detectron2's ``retinanet_R_50_FPN_*/model_final_*.pkl``, written out
    from Detectron2's module tree: ResNet ``stem`` / ``res2..res5`` (``conv{n}.norm``,
    ``shortcut``), ``fpn_lateral{3,4,5}`` / ``fpn_output{3,4,5}``, ``top_block.p6`` (from res5's
    2048 channels) / ``p7``, and the head's ``cls_subnet`` / ``bbox_subnet`` (conv, ReLU) x 4."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_norm(name: str, out_channels: int, in_channels: int, kernel: int) -> None:
        shapes[f"{name}.weight"] = (out_channels, in_channels, kernel, kernel)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.norm.{stat}"] = (out_channels,)

    bottom_up = "backbone.bottom_up"
    conv_norm(f"{bottom_up}.stem.conv1", 64, 3, 7)
    in_channels = 64
    for stage, blocks, width in ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)):
        out_channels = 4 * width
        for block in range(blocks):
            prefix = f"{bottom_up}.res{stage}.{block}"
            if block == 0:
                conv_norm(f"{prefix}.shortcut", out_channels, in_channels, 1)
            conv_norm(f"{prefix}.conv1", width, in_channels, 1)
            conv_norm(f"{prefix}.conv2", width, width, 3)
            conv_norm(f"{prefix}.conv3", out_channels, width, 1)
            in_channels = out_channels
    for level, channels in ((3, 512), (4, 1024), (5, 2048)):
        shapes[f"backbone.fpn_lateral{level}.weight"] = (256, channels, 1, 1)
        shapes[f"backbone.fpn_output{level}.weight"] = (256, 256, 3, 3)
        shapes[f"backbone.fpn_lateral{level}.bias"] = shapes[f"backbone.fpn_output{level}.bias"] = (
            256,
        )
    shapes["backbone.top_block.p6.weight"] = (256, 2048, 3, 3)
    shapes["backbone.top_block.p7.weight"] = (256, 256, 3, 3)
    shapes["backbone.top_block.p6.bias"] = shapes["backbone.top_block.p7.bias"] = (256,)
    for tower in ("cls_subnet", "bbox_subnet"):
        for index in (0, 2, 4, 6):
            shapes[f"head.{tower}.{index}.weight"] = (256, 256, 3, 3)
            shapes[f"head.{tower}.{index}.bias"] = (256,)
    shapes["head.cls_score.weight"] = (9 * num_classes, 256, 3, 3)
    shapes["head.cls_score.bias"] = (9 * num_classes,)
    shapes["head.bbox_pred.weight"] = (9 * 4, 256, 3, 3)
    shapes["head.bbox_pred.bias"] = (9 * 4,)
    return shapes


def test_detectron2_retinanet_preset_takes_detectron2s_checkpoint_as_it_is() -> None:
    shapes = _detectron2_retinanet_r50_fpn_names()
    assert len(shapes) == 301
    # In memory (reading .pkl files is tested in tests/checkpoint): the names decide here.
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: torch.randn(shape, generator=generator) * 0.05 for name, shape in shapes.items()
    }
    for name, tensor in tensors.items():
        if name.endswith("running_var"):
            tensor.abs_().add_(1.0)
    model = instantiate(compose("detectron2_retinanet_fpn", ["dataset=coco2017"]).model).eval()

    report = load_weights(model, tensors)

    assert report.naming == "detectron2"
    assert not report.unexpected and not report.mismatched, str(report)
    assert len(report.loaded) == 301
    # Only RetinaNet's own training state (not a weight) is absent from a Detectron2 file.
    assert set(report.missing) <= {"foreground_ema"}, report.missing
    state = model.state_dict()
    p6_weight = tensors["backbone.top_block.p6.weight"]
    assert torch.equal(state["backbone.top_block.p6.weight"], p6_weight)
    torch.testing.assert_close(
        state["head.cls_score.weight"], tensors["head.cls_score.weight"], rtol=0, atol=0
    )
    # P6 is computed from res5 (2048 channels), as in Detectron2, not from P5.
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = model.backbone(image)
        res5 = model.backbone.bottom_up(image)["res5"]
        p6 = torch.nn.functional.conv2d(
            res5, p6_weight, tensors["backbone.top_block.p6.bias"], stride=2, padding=1
        )
    torch.testing.assert_close(features["p6"], p6)


# ---------------------------------------------------------------------------------------------
# Keypoint scores


def test_keypoint_scores_as_probabilities_by_hand() -> None:
    # One 2x2 heatmap over the box (0, 0, 2, 2): resized to ceil(2) x ceil(2) = itself. The peak
    # ln 3 at row 0, column 1 is the keypoint (1 + 0.5, 0 + 0.5); Detectron2's score is its
    # softmax over the 4 bins, 3 / (1 + 3 + 1 + 1) = 0.5; torchvision's is the logit ln 3.
    heatmap = torch.tensor([[[[0.0, math.log(3.0)], [0.0, 0.0]]]])
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    probability = heatmaps_to_keypoints(heatmap, box, score_type="probability")
    logit = heatmaps_to_keypoints(heatmap, box, score_type="logit")
    torch.testing.assert_close(probability, torch.tensor([[[1.5, 0.5, 0.5]]]))
    torch.testing.assert_close(logit, torch.tensor([[[1.5, 0.5, math.log(3.0)]]]))


# ---------------------------------------------------------------------------------------------
# The presets name Detectron2's options


@pytest.mark.parametrize(
    ("experiment", "option", "value"),
    [
        ("detectron2_faster_rcnn_fpn", None, None),
        ("detectron2_mask_rcnn_fpn", "model.mask_paste", "detectron2"),
        ("detectron2_keypoint_rcnn_fpn", "model.roi_heads.keypoint_head.score_type", "probability"),
        ("detectron2_retinanet_fpn", "model.clip_before_nms", False),
        ("detectron2_retinanet_fpn", "model.backbone.top_block.in_feature", "res5"),
    ],
)
def test_detectron2_presets(experiment: str, option: str | None, value) -> None:
    cfg = compose(experiment, ["dataset=coco2017"])
    assert cfg.model.backbone.bottom_up.stride_in_1x1 is True  # MSRA ResNet
    assert list(cfg.model.pixel_std) == [1.0, 1.0, 1.0]
    assert list(cfg.model.pixel_mean) == [123.675, 116.28, 103.53]  # BGR means, RGB order
    if option is not None:
        node = cfg
        for key in option.split("."):
            node = node[key]
        assert node == value
    torchvision = compose(experiment.replace("detectron2", "torchvision"), ["dataset=coco2017"])
    assert torchvision.model.get("mask_paste", "torchvision") == "torchvision"
    assert torchvision.model.get("clip_before_nms", True) is True


def test_detectron2_mask_preset_pastes_with_grid_sample() -> None:
    model = instantiate(compose("detectron2_mask_rcnn_fpn", ["dataset=shapes"]).model)
    model.mask_threshold = None
    masks = torch.rand(2, 28, 28, generator=torch.Generator().manual_seed(3))
    boxes = torch.tensor([[3.2, 4.7, 20.1, 15.0], [0.0, 10.5, 9.4, 30.0]])
    result = Instances((32, 40), pred_boxes=Boxes(boxes), pred_masks=masks)
    pasted = model.rescale_detections(result, 16, 20).pred_masks
    torch.testing.assert_close(pasted, paste_masks_grid_sample(masks, boxes / 2, (16, 20)))
    assert not torch.allclose(pasted, paste_masks_in_image(masks, boxes / 2, (16, 20)))
