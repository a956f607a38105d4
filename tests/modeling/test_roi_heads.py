"""ROI heads against torchvision's RoIHeads (losses, postprocessing, full eval forward with the same
weights), hand-computed sampling cases, and a few optimisation steps on fixed proposals."""

from __future__ import annotations

import functools
import runpy
from collections import OrderedDict

import pytest
import torch
from helpers import losses_before_and_after_steps, random_boxes
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    fastrcnn_loss,
    keypointrcnn_inference,
    keypointrcnn_loss,
    maskrcnn_loss,
)
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align

from lazydet.config.tree import builtin_config_root
from lazydet.layers import ShapeSpec
from lazydet.modeling.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    ROIPooler,
    StandardROIHeads,
    heatmaps_to_keypoints,
    keypoint_rcnn_loss,
    mask_rcnn_loss,
)
from lazydet.structures import (
    BitMasks,
    Boxes,
    ImageList,
    Instances,
    Keypoints,
    PolygonMasks,
    pairwise_iou,
)

# torchvision's options live in the presets (conf/_torchvision_numerics.py), their one home.
_TORCHVISION = runpy.run_path(str(builtin_config_root() / "_torchvision_numerics.py"))
TORCHVISION_FAST_RCNN_OPTIONS = _TORCHVISION["TORCHVISION_FAST_RCNN_OPTIONS"]
TORCHVISION_MASK_HEAD_OPTIONS = _TORCHVISION["TORCHVISION_MASK_HEAD_OPTIONS"]
TORCHVISION_ROI_HEADS_OPTIONS = _TORCHVISION["TORCHVISION_ROI_HEADS_OPTIONS"]


NUM_CLASSES = 3
NUM_KEYPOINTS = 4
CHANNELS = 8
IMAGE = 64
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
INPUT_SHAPE = {name: ShapeSpec(channels=CHANNELS, stride=s) for name, s in STRIDES.items()}
IMAGE_SIZES = [(64, 60), (56, 64)]


def image_boxes(
    n: int, size: tuple[int, int], g: torch.Generator, max_side: float = 40
) -> torch.Tensor:
    """Boxes inside an image of ``size`` (height, width)."""
    height, width = size
    return random_boxes(
        n,
        g,
        extent=(width * 0.7, height * 0.7),
        min_side=2.0,
        side_spread=max_side,
        clip_to=(width, height),
    )


def make_features(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (name, torch.randn(2, CHANNELS, IMAGE // s, IMAGE // s, generator=g))
        for name, s in STRIDES.items()
    )


def to_torchvision_logits(scores: torch.Tensor) -> torch.Tensor:
    """lazydet's [R, K + 1] (background last) -> torchvision's (background first)."""
    return torch.cat((scores[:, -1:], scores[:, :-1]), dim=1)


# ---------------------------------------------------------------------------------------------
# Fast R-CNN predictor: inference and losses
# ---------------------------------------------------------------------------------------------
def torchvision_roi_heads(**kwargs) -> RoIHeads:
    options = {
        "box_roi_pool": None,
        "box_head": None,
        "box_predictor": None,
        "fg_iou_thresh": 0.5,
        "bg_iou_thresh": 0.5,
        "batch_size_per_image": 512,
        "positive_fraction": 0.25,
        "bbox_reg_weights": None,
        "score_thresh": 0.05,
        "nms_thresh": 0.5,
        "detections_per_img": 100,
    }
    options.update(kwargs)
    return RoIHeads(**options)


@pytest.mark.parametrize("detections_per_img", [100, 7])
def test_fast_rcnn_inference_matches_torchvision_postprocess(detections_per_img: int) -> None:
    g = torch.Generator().manual_seed(0)
    proposals = [image_boxes(30, size, g) for size in IMAGE_SIZES]
    # Proposals thinner than torchvision's 1e-2 px minimum, to exercise the small-box filter.
    proposals[0][:2, 2] = proposals[0][:2, 0] + 0.005
    num_rois = sum(len(p) for p in proposals)
    scores = torch.randn(num_rois, NUM_CLASSES + 1, generator=g) * 2
    deltas = torch.randn(num_rois, NUM_CLASSES * 4, generator=g) * 0.5
    deltas[:2] = 0  # keep the thin proposals thin
    background_deltas = torch.randn(num_rois, 4, generator=g)

    predictor = FastRCNNOutputLayers(
        input_size=4,
        num_classes=NUM_CLASSES,
        test_topk_per_image=detections_per_img,
        **TORCHVISION_FAST_RCNN_OPTIONS,
    )
    instances = [
        Instances(size, proposal_boxes=Boxes(p)) for size, p in zip(IMAGE_SIZES, proposals)
    ]
    ours = predictor.inference((scores, deltas), instances)

    theirs = torchvision_roi_heads(detections_per_img=detections_per_img).postprocess_detections(
        to_torchvision_logits(scores),
        torch.cat((background_deltas, deltas), dim=1),
        proposals,
        IMAGE_SIZES,
    )
    for image, result in enumerate(ours):
        boxes, probs, labels = (t[image] for t in theirs)
        assert len(result) == len(boxes) > 0
        assert len(result) <= detections_per_img
        torch.testing.assert_close(result.pred_boxes.tensor, boxes)
        torch.testing.assert_close(result.scores, probs)
        assert torch.equal(result.pred_classes, labels - 1)
        assert result.image_size == IMAGE_SIZES[image]


def test_fast_rcnn_inference_class_agnostic_and_non_finite() -> None:
    predictor = FastRCNNOutputLayers(input_size=4, num_classes=2, cls_agnostic_bbox_reg=True)
    proposals = [
        Instances((20, 20), proposal_boxes=Boxes(torch.tensor([[2.0, 2.0, 10.0, 10.0]] * 2)))
    ]
    # Class 0 and 1 both pass the threshold for ROI 0; ROI 1 has a NaN score and is dropped.
    scores = torch.tensor([[0.0, 0.0, -1.0], [float("nan"), 0.0, 0.0]])
    deltas = torch.zeros(2, 4)
    (result,) = predictor.inference((scores, deltas), proposals)
    assert sorted(result.pred_classes.tolist()) == [0, 1]
    torch.testing.assert_close(result.pred_boxes.tensor, torch.tensor([[2.0, 2.0, 10.0, 10.0]] * 2))
    probs = torch.softmax(scores[0], dim=0)
    torch.testing.assert_close(result.scores, probs[:2])


def sampled_proposals(g: torch.Generator) -> tuple[list[Instances], list[torch.Tensor]]:
    """Sampled proposals with gt_classes (background = NUM_CLASSES) and matched gt_boxes."""
    proposals, boxes = [], []
    for size, n in zip(IMAGE_SIZES, (20, 13)):
        p = image_boxes(n, size, g)
        gt = p + torch.randn(n, 4, generator=g) * 2
        gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 1)
        classes = torch.randint(0, NUM_CLASSES + 1, (n,), generator=g)
        proposals.append(
            Instances(size, proposal_boxes=Boxes(p), gt_classes=classes, gt_boxes=Boxes(gt))
        )
        boxes.append(p)
    return proposals, boxes


@pytest.mark.parametrize("options", [TORCHVISION_FAST_RCNN_OPTIONS, {"smooth_l1_beta": 0.0}])
def test_fast_rcnn_losses_match_torchvision_fastrcnn_loss(options: dict) -> None:
    g = torch.Generator().manual_seed(1)
    proposals, boxes = sampled_proposals(g)
    num_rois = sum(len(p) for p in proposals)
    scores = torch.randn(num_rois, NUM_CLASSES + 1, generator=g)
    deltas = torch.randn(num_rois, NUM_CLASSES * 4, generator=g)
    predictor = FastRCNNOutputLayers(input_size=4, num_classes=NUM_CLASSES, **options)
    ours = predictor.losses((scores, deltas), proposals)

    # torchvision: classes 1..K with 0 background, deltas for the background too.
    labels = [torch.where(p.gt_classes == NUM_CLASSES, 0, p.gt_classes + 1) for p in proposals]
    targets = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode([p.gt_boxes.tensor for p in proposals], boxes)
    loss_cls, loss_box = fastrcnn_loss(
        to_torchvision_logits(scores),
        torch.cat((torch.zeros(num_rois, 4), deltas), dim=1),
        labels,
        list(targets),
    )
    torch.testing.assert_close(ours["loss_cls"], loss_cls)
    if options["smooth_l1_beta"] > 0:
        torch.testing.assert_close(ours["loss_box_reg"], loss_box)
    else:
        # beta = 0 is plain L1, summed over foreground and divided by all sampled ROIs.
        label = torch.cat(labels)
        fg = label > 0
        pred = deltas.view(num_rois, NUM_CLASSES, 4)[fg, label[fg] - 1]
        expected = (pred - torch.cat(targets)[fg]).abs().sum() / num_rois
        torch.testing.assert_close(ours["loss_box_reg"], expected)


def test_fast_rcnn_losses_empty_batch_is_zero_with_gradient() -> None:
    predictor = FastRCNNOutputLayers(input_size=4, num_classes=2)
    features = torch.zeros(0, 4, requires_grad=True)
    proposals = [
        Instances(
            (8, 8),
            proposal_boxes=Boxes(torch.zeros(0, 4)),
            gt_classes=torch.zeros(0, dtype=torch.int64),
            gt_boxes=Boxes(torch.zeros(0, 4)),
        )
    ]
    losses = predictor.losses(predictor(features), proposals)
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert predictor.cls_score.weight.grad is not None


# ---------------------------------------------------------------------------------------------
# Mask and keypoint losses / inference
# ---------------------------------------------------------------------------------------------
def foreground_with_targets(g: torch.Generator, size: int = 48):
    """Per image: foreground proposals (proposal_boxes, gt_classes, gt_idxs) and their gts."""
    proposals, gt_boxes = [], []
    for n_gt, n_prop in ((3, 9), (2, 5)):
        gts = image_boxes(n_gt, (size, size), g, max_side=30)
        idxs = torch.randint(0, n_gt, (n_prop,), generator=g)
        boxes = gts[idxs] + torch.randn(n_prop, 4, generator=g) * 2
        classes = torch.randint(0, NUM_CLASSES, (n_gt,), generator=g)
        proposals.append(
            Instances(
                (size, size),
                proposal_boxes=Boxes(boxes),
                gt_classes=classes[idxs],
                gt_idxs=idxs,
            )
        )
        gt_boxes.append((gts, classes))
    return proposals, gt_boxes


def box_bitmasks(
    gts: torch.Tensor, size: int, g: torch.Generator, density: float = 0.6
) -> torch.Tensor:
    """A random blob inside each ground-truth box (the whole box with density 1)."""
    masks = torch.rand(len(gts), size, size, generator=g) < density
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for mask, (x1, y1, x2, y2) in zip(masks, gts.tolist()):
        mask &= (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    return masks


def mask_loss_case(*, seed: int):
    """``(proposals, gts, gt_masks, logits)``: foreground proposals with their targets (as
    ``foreground_with_targets``), a ``[48, 48]`` bitmask per ground-truth box and
    ``[R, NUM_CLASSES, 14, 14]`` mask logits, all drawn from one generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    proposals, gts = foreground_with_targets(g)
    gt_masks = [box_bitmasks(boxes, 48, g) for boxes, _ in gts]
    num_rois = sum(len(p) for p in proposals)
    return proposals, gts, gt_masks, torch.randn(num_rois, NUM_CLASSES, 14, 14, generator=g)


def test_mask_loss_matches_torchvision_maskrcnn_loss() -> None:
    proposals, gts, gt_masks, logits = mask_loss_case(seed=2)
    num_rois = len(logits)
    ours = mask_rcnn_loss(
        logits, proposals, [BitMasks(m) for m in gt_masks], **TORCHVISION_MASK_HEAD_OPTIONS
    )
    theirs = maskrcnn_loss(
        torch.cat((torch.zeros(num_rois, 1, 14, 14), logits), dim=1),
        [p.proposal_boxes.tensor for p in proposals],
        [m.to(torch.uint8) for m in gt_masks],
        [classes + 1 for _, classes in gts],
        [p.gt_idxs for p in proposals],
    )
    torch.testing.assert_close(ours, theirs)


def test_mask_loss_default_targets_are_aligned_and_binarized() -> None:
    proposals, _, gt_masks, logits = mask_loss_case(seed=3)
    ours = mask_rcnn_loss(logits, proposals, [BitMasks(m) for m in gt_masks])
    # Reference: torchvision's roi_align (aligned=True) of each matched mask, thresholded at 0.5.
    targets, picked = [], []
    for p, masks in zip(proposals, gt_masks):
        rois = torch.cat((p.gt_idxs[:, None].float(), p.proposal_boxes.tensor), dim=1)
        crops = torchvision_roi_align(masks[:, None].float(), rois, 14, 1.0, 0, aligned=True)
        targets.append((crops[:, 0] >= 0.5).float())
    logits_by_roi = logits.split([len(p) for p in proposals])
    for p, lg in zip(proposals, logits_by_roi):
        picked.append(lg[torch.arange(len(p)), p.gt_classes])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.cat(picked), torch.cat(targets)
    )
    torch.testing.assert_close(ours, expected)


def test_mask_loss_polygons_match_bitmasks_on_box_aligned_rectangles() -> None:
    # A rectangle polygon and its raster give the same targets when the proposal is the box.
    rect = torch.tensor([[8.0, 4.0, 24.0, 20.0]])
    polygon = PolygonMasks([[[8.0, 4.0, 24.0, 4.0, 24.0, 20.0, 8.0, 20.0]]])
    bitmask = torch.zeros(1, 32, 32, dtype=torch.bool)
    bitmask[0, 4:20, 8:24] = True
    proposals = [
        Instances(
            (32, 32),
            proposal_boxes=Boxes(rect),
            gt_classes=torch.tensor([1]),
            gt_idxs=torch.tensor([0]),
        )
    ]
    logits = torch.randn(1, 2, 8, 8)
    from_polygons = mask_rcnn_loss(logits, proposals, [polygon])
    from_bitmasks = mask_rcnn_loss(logits, proposals, [BitMasks(bitmask)])
    torch.testing.assert_close(from_polygons, from_bitmasks)
    # All-ones target: the loss is the mean of softplus(-logit) over class 1's channel.
    torch.testing.assert_close(from_bitmasks, torch.nn.functional.softplus(-logits[0, 1]).mean())


def random_keypoints(gts: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Keypoints mostly inside each box, some outside, some unlabelled (v = 0)."""
    n = len(gts)
    frac = torch.rand(n, NUM_KEYPOINTS, 2, generator=g) * 1.2 - 0.1
    xy = gts[:, None, :2] + frac * (gts[:, None, 2:] - gts[:, None, :2])
    vis = torch.randint(0, 3, (n, NUM_KEYPOINTS, 1), generator=g).float()
    return torch.cat((xy, vis), dim=2)


def test_keypoint_loss_matches_torchvision_keypointrcnn_loss() -> None:
    g = torch.Generator().manual_seed(4)
    proposals, gts = foreground_with_targets(g)
    keypoints = [random_keypoints(boxes, g) for boxes, _ in gts]
    num_rois = sum(len(p) for p in proposals)
    logits = torch.randn(num_rois, NUM_KEYPOINTS, 56, 56, generator=g)
    ours = keypoint_rcnn_loss(logits, proposals, [Keypoints(k) for k in keypoints])
    theirs = keypointrcnn_loss(
        logits,
        [p.proposal_boxes.tensor for p in proposals],
        keypoints,
        [p.gt_idxs for p in proposals],
    )
    torch.testing.assert_close(ours, theirs)


def test_keypoint_loss_without_visible_keypoints_is_zero() -> None:
    proposals = [
        Instances(
            (20, 20),
            proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]])),
            gt_idxs=torch.tensor([0]),
        )
    ]
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    loss = keypoint_rcnn_loss(logits, proposals, [Keypoints(torch.zeros(1, 2, 3))])
    assert loss.item() == 0
    loss.backward()


@pytest.mark.parametrize(
    ("loss", "ground_truth", "name", "side"),
    [
        (mask_rcnn_loss, BitMasks(torch.zeros(1, 20, 20, dtype=torch.bool)), "mask_logits", "M"),
        (keypoint_rcnn_loss, Keypoints(torch.zeros(1, 2, 3)), "heatmap_logits", "S"),
    ],
)
def test_roi_losses_name_the_bad_argument(loss, ground_truth, name, side) -> None:
    """Non-square logits and a proposals / ground-truth image count mismatch: one ValueError
    naming the argument (the check both losses share, roi_heads.loss_inputs)."""
    proposals = [
        Instances(
            (20, 20),
            proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]])),
            gt_classes=torch.tensor([0]),
            gt_idxs=torch.tensor([0]),
        )
    ]
    with pytest.raises(ValueError, match=rf"{name} must be square \[R, K, {side}, {side}\]"):
        loss(torch.randn(1, 2, 8, 6), proposals, [ground_truth])
    gt_name = "gt_masks" if loss is mask_rcnn_loss else "gt_keypoints"
    with pytest.raises(ValueError, match=f"proposals of 1 images and {gt_name} of 2"):
        loss(torch.randn(1, 2, 8, 8), proposals, [ground_truth, ground_truth])


def test_keypoint_inference_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(5)
    boxes = [image_boxes(5, (80, 90), g), image_boxes(3, (80, 90), g)]
    boxes[0][0] = torch.tensor([10.0, 10.0, 10.4, 30.0])  # narrower than a pixel: clamped to 1
    logits = torch.randn(8, NUM_KEYPOINTS, 56, 56, generator=g)
    their_keypoints, their_scores = keypointrcnn_inference(logits, boxes)
    ours = [heatmaps_to_keypoints(lg, b) for lg, b in zip(logits.split([5, 3]), boxes)]
    for mine, kp, sc in zip(ours, their_keypoints, their_scores):
        torch.testing.assert_close(mine[..., :2], kp[..., :2], rtol=0, atol=0)
        torch.testing.assert_close(mine[..., 2], sc)


def test_keypoint_probability_score_is_the_heatmap_softmax_peak() -> None:
    # A box of exactly S x S whole pixels: the bicubic resize is the identity, so the peak is the
    # heatmap's maximum and its probability the softmax maximum over the S * S bins.
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 2, 12, 12, generator=g)
    box = torch.tensor([[3.0, 5.0, 15.0, 17.0]])
    result = heatmaps_to_keypoints(logits, box, score_type="probability")
    flat = logits[0].reshape(2, -1)
    torch.testing.assert_close(result[0, :, 2], flat.softmax(dim=1).max(dim=1).values)
    peak = flat.argmax(dim=1)
    torch.testing.assert_close(result[0, :, 0], 3.0 + (peak % 12).float() + 0.5)
    torch.testing.assert_close(result[0, :, 1], 5.0 + (peak // 12).float() + 0.5)


# ---------------------------------------------------------------------------------------------
# Heads' architecture: same function as torchvision's with copied weights
# ---------------------------------------------------------------------------------------------
def test_box_mask_keypoint_heads_compute_torchvision_heads() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, CHANNELS, 7, 7)
    ours_box = FastRCNNConvFCHead(in_channels=CHANNELS, pooler_resolution=7, fc_dims=(32, 32))
    theirs_box = TwoMLPHead(CHANNELS * 49, 32)
    theirs_box.fc6.load_state_dict(ours_box.layers[1].state_dict())
    theirs_box.fc7.load_state_dict(ours_box.layers[3].state_dict())
    torch.testing.assert_close(ours_box(x), theirs_box(x))
    assert ours_box.output_size == 32

    x = torch.randn(5, CHANNELS, 14, 14)
    ours_mask = MaskRCNNConvUpsampleHead(
        in_channels=CHANNELS, num_classes=NUM_CLASSES, conv_dims=(6, 6)
    )
    theirs_mask = torch.nn.Sequential(
        MaskRCNNHeads(CHANNELS, [6, 6], 1), MaskRCNNPredictor(6, 6, NUM_CLASSES + 1)
    )
    for i in range(2):
        theirs_mask[0][i][0].load_state_dict(ours_mask.convs[2 * i].state_dict())
    theirs_mask[1].conv5_mask.load_state_dict(ours_mask.deconv.state_dict())
    with torch.no_grad():
        theirs_mask[1].mask_fcn_logits.weight[1:] = ours_mask.predictor.weight
        theirs_mask[1].mask_fcn_logits.bias[1:] = ours_mask.predictor.bias
    assert ours_mask(x).shape == (5, NUM_CLASSES, 28, 28)
    torch.testing.assert_close(ours_mask(x), theirs_mask(x)[:, 1:])

    ours_kp = KRCNNConvDeconvUpsampleHead(
        in_channels=CHANNELS, num_keypoints=NUM_KEYPOINTS, conv_dims=(6, 6, 6)
    )
    theirs_kp = torch.nn.Sequential(
        KeypointRCNNHeads(CHANNELS, [6, 6, 6]), KeypointRCNNPredictor(6, NUM_KEYPOINTS)
    )
    theirs_kp[0].load_state_dict(ours_kp.convs.state_dict())
    theirs_kp[1].kps_score_lowres.load_state_dict(ours_kp.score_lowres.state_dict())
    assert ours_kp(x).shape == (5, NUM_KEYPOINTS, 56, 56)
    torch.testing.assert_close(ours_kp(x), theirs_kp(x))


def test_roi_pooler_torchvision_preset_matches_multiscale_roi_align() -> None:
    g = torch.Generator().manual_seed(7)
    features = make_features()
    boxes = [image_boxes(20, size, g, max_side=60) for size in IMAGE_SIZES]
    pooler = ROIPooler(
        output_size=7,
        scales=[1 / s for s in STRIDES.values()],
        sampling_ratio=TORCHVISION_ROI_HEADS_OPTIONS["pooler_sampling_ratio"],
        aligned=TORCHVISION_ROI_HEADS_OPTIONS["pooler_aligned"],
    )
    theirs = MultiScaleRoIAlign(list(STRIDES), 7, 2)(features, boxes, [(IMAGE, IMAGE)] * 2)
    torch.testing.assert_close(pooler(list(features.values()), boxes), theirs)


def test_roi_pooler_single_level_pools_every_box_from_it() -> None:
    # One level (a C4 backbone): any stride, no level mapping.
    g = torch.Generator().manual_seed(11)
    features = torch.randn(2, CHANNELS, 5, 5, generator=g)
    boxes = [image_boxes(4, (70, 70), g), image_boxes(3, (70, 70), g)]
    pooled = ROIPooler(output_size=3, scales=[1 / 14])([features], boxes)
    rois = torch.cat(
        [torch.cat((torch.full((len(b), 1), float(i)), b), dim=1) for i, b in enumerate(boxes)]
    )
    expected = torchvision_roi_align(features, rois, 3, 1 / 14, 0, aligned=True)
    torch.testing.assert_close(pooled, expected)


def test_roi_pooler_rejects_scales_that_are_not_a_pyramid() -> None:
    with pytest.raises(ValueError, match="powers of two"):
        ROIPooler(output_size=7, scales=[1 / 4, 1 / 16])


# ---------------------------------------------------------------------------------------------
# StandardROIHeads
# ---------------------------------------------------------------------------------------------
def small_roi_heads(**kwargs) -> StandardROIHeads:
    options = {
        "input_shape": INPUT_SHAPE,
        "num_classes": NUM_CLASSES,
        "box_head": functools.partial(FastRCNNConvFCHead, fc_dims=(32, 32)),
        "mask_head": functools.partial(MaskRCNNConvUpsampleHead, conv_dims=(8, 8)),
        "keypoint_head": functools.partial(
            KRCNNConvDeconvUpsampleHead, num_keypoints=NUM_KEYPOINTS, conv_dims=(8, 8)
        ),
        "mask_pooler_resolution": 7,
        "keypoint_pooler_resolution": 7,
        "batch_size_per_image": 32,
    }
    options.update(kwargs)
    return StandardROIHeads(**options)


def test_heads_are_sized_from_input_shape() -> None:
    heads = small_roi_heads(box_pooler_resolution=5)
    assert heads.box_head.layers[1].in_features == CHANNELS * 25
    assert heads.box_predictor.cls_score.in_features == 32
    assert heads.box_predictor.cls_score.out_features == NUM_CLASSES + 1
    assert heads.box_predictor.bbox_pred.out_features == NUM_CLASSES * 4
    assert heads.mask_head.convs[0].in_channels == CHANNELS
    assert heads.mask_head.predictor.out_channels == NUM_CLASSES
    assert heads.keypoint_head.convs[0].in_channels == CHANNELS
    assert heads.box_pooler.scales == [0.25, 0.125, 0.0625, 0.03125]
    # A built module is used as given.
    box_head = FastRCNNConvFCHead(in_channels=CHANNELS, pooler_resolution=7, fc_dims=(16,))
    assert small_roi_heads(box_head=box_head).box_head is box_head


def test_heads_reject_bad_shapes() -> None:
    shapes = {**INPUT_SHAPE, "p5": ShapeSpec(channels=CHANNELS * 2, stride=32)}
    with pytest.raises(ValueError, match="same channel count"):
        small_roi_heads(input_shape=shapes)
    with pytest.raises(ValueError, match=r"\['p7'\] are not among"):
        small_roi_heads(in_features=["p2", "p7"])
    with pytest.raises(TypeError, match="mask_head must be"):
        small_roi_heads(mask_head="MaskRCNNConvUpsampleHead")


def test_label_and_sample_proposals_hand_computed() -> None:
    heads = small_roi_heads(batch_size_per_image=4, positive_fraction=0.5)
    gt = Instances(
        (64, 64),
        gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 50.0, 50.0]])),
        gt_classes=torch.tensor([2, 1]),
    )
    proposal_boxes = torch.tensor(
        [
            [0.0, 0.0, 20.0, 16.0],  # IoU 0.8 with gt 0: foreground, class 2
            [30.0, 30.0, 50.0, 40.0],  # IoU 0.5 with gt 1: foreground (>= 0.5), class 1
            [0.0, 0.0, 20.0, 8.0],  # IoU 0.4 with gt 0: background
            [55.0, 55.0, 60.0, 60.0],  # no overlap: background
        ]
    )
    proposals = [Instances((64, 64), proposal_boxes=Boxes(proposal_boxes))]
    torch.manual_seed(0)
    (sampled,) = heads.label_and_sample_proposals(proposals, [gt])
    # 6 candidates (4 + 2 gt boxes): 4 foreground, at most 4 * 0.5 = 2 of them kept, then 2 of
    # the 2 background ones.
    assert len(sampled) == 4
    fg = sampled.gt_classes < NUM_CLASSES
    assert fg.tolist() == [True, True, False, False]
    fg_boxes = sampled.proposal_boxes[fg]
    fg_gt_boxes = sampled.gt_boxes.tensor[fg]
    for k, (cls, idx) in enumerate(zip(sampled.gt_classes[fg], sampled.gt_idxs[fg])):
        assert int(cls) == [2, 1][int(idx)]
        assert torch.equal(fg_gt_boxes[k], gt.gt_boxes.tensor[idx])
        assert pairwise_iou(fg_boxes[k], gt.gt_boxes[idx]).item() >= 0.5
    background_boxes = sampled.proposal_boxes.tensor[~fg]
    assert sorted(background_boxes[:, 3].tolist()) == [8.0, 60.0]

    # Without ground truth every proposal is background.
    empty = Instances(
        (64, 64), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    (sampled,) = heads.label_and_sample_proposals(proposals, [empty])
    assert (sampled.gt_classes == NUM_CLASSES).all() and len(sampled) == 4


def training_batch(g: torch.Generator):
    """Targets with boxes, masks and keypoints, and fixed proposals jittered around them."""
    targets, proposals = [], []
    for size in IMAGE_SIZES:
        gts = torch.tensor([[6.0, 8.0, 30.0, 40.0], [28.0, 20.0, 56.0, 50.0]])
        masks = box_bitmasks(gts, IMAGE, g, density=1.0)[:, : size[0], : size[1]]
        targets.append(
            Instances(
                size,
                gt_boxes=Boxes(gts),
                gt_classes=torch.tensor([0, 2]),
                gt_masks=BitMasks(masks),
                gt_keypoints=Keypoints(random_keypoints(gts, g)),
            )
        )
        jitter = torch.randn(40, 4, generator=g) * 4
        props = torch.cat((gts.repeat(20, 1) + jitter, image_boxes(10, size, g)))
        proposals.append(Instances(size, proposal_boxes=Boxes(props)))
    return targets, proposals


def test_training_steps_reduce_every_loss() -> None:
    g = torch.Generator().manual_seed(8)
    torch.manual_seed(0)
    heads = small_roi_heads(proposal_append_gt=False)
    features = dict(make_features())
    targets, proposals = training_batch(g)
    images = ImageList(torch.zeros(2, 3, IMAGE, IMAGE), IMAGE_SIZES)
    optimizer = torch.optim.Adam(heads.parameters(), lr=1e-2)

    def losses_at(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)  # the same sampled ROIs each time
        _, losses = heads(images, features, proposals, targets)
        return losses

    heads.train()
    before, after = losses_before_and_after_steps(losses_at, optimizer, steps=15)
    assert set(before) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_keypoint"}
    for name in before:
        assert after[name] < 0.9 * before[name], (name, before[name], after[name])


def test_inference_outputs() -> None:
    g = torch.Generator().manual_seed(9)
    torch.manual_seed(0)
    heads = small_roi_heads().eval()
    features = dict(make_features())
    _, proposals = training_batch(g)
    images = ImageList(torch.zeros(2, 3, IMAGE, IMAGE), IMAGE_SIZES)
    detections, losses = heads(images, features, proposals)
    assert losses == {}
    for det, size in zip(detections, IMAGE_SIZES):
        assert det.image_size == size and len(det) > 0
        assert set(det.get_fields()) == {
            "pred_boxes",
            "scores",
            "pred_classes",
            "pred_masks",
            "pred_keypoints",
        }
        assert det.pred_masks.shape == (len(det), 14, 14)
        assert det.pred_keypoints.shape == (len(det), NUM_KEYPOINTS, 3)
        assert ((det.pred_masks >= 0) & (det.pred_masks <= 1)).all()
        boxes = det.pred_boxes.tensor
        assert (boxes[:, 2] <= size[1]).all() and (boxes[:, 3] <= size[0]).all()
        # Keypoints lie inside their detected box (argmax of a heatmap over the box).
        kp = det.pred_keypoints
        assert (kp[..., 0] >= boxes[:, None, 0]).all() and (
            kp[..., 0] <= boxes[:, None, 2] + 1
        ).all()


def test_eval_forward_matches_torchvision_roi_heads_with_same_weights() -> None:
    """The whole eval forward (pool, box head, predictor, postprocess, masks, keypoints) against
    torchvision's RoIHeads built from the same weights, with the torchvision presets."""
    torch.manual_seed(0)
    ours = small_roi_heads(
        box_predictor=functools.partial(FastRCNNOutputLayers, **TORCHVISION_FAST_RCNN_OPTIONS),
        mask_head=functools.partial(
            MaskRCNNConvUpsampleHead, conv_dims=(8, 8), **TORCHVISION_MASK_HEAD_OPTIONS
        ),
        mask_pooler_resolution=14,
        keypoint_pooler_resolution=14,
        **TORCHVISION_ROI_HEADS_OPTIONS,
    ).eval()
    # Larger random weights than the initialisation, so scores spread out.
    with torch.no_grad():
        for p in ours.box_predictor.parameters():
            p.normal_(std=0.3)

    box_head = TwoMLPHead(CHANNELS * 49, 32)
    box_head.fc6.load_state_dict(ours.box_head.layers[1].state_dict())
    box_head.fc7.load_state_dict(ours.box_head.layers[3].state_dict())
    predictor = FastRCNNPredictor(32, NUM_CLASSES + 1)
    mask_head = MaskRCNNHeads(CHANNELS, [8, 8], 1)
    mask_predictor = MaskRCNNPredictor(8, 8, NUM_CLASSES + 1)
    kp_head = KeypointRCNNHeads(CHANNELS, [8, 8])
    kp_predictor = KeypointRCNNPredictor(8, NUM_KEYPOINTS)
    with torch.no_grad():
        order = [NUM_CLASSES, *range(NUM_CLASSES)]
        predictor.cls_score.weight.copy_(ours.box_predictor.cls_score.weight[order])
        predictor.cls_score.bias.copy_(ours.box_predictor.cls_score.bias[order])
        predictor.bbox_pred.weight[4:] = ours.box_predictor.bbox_pred.weight
        predictor.bbox_pred.bias[4:] = ours.box_predictor.bbox_pred.bias
        for i in range(2):
            mask_head[i][0].load_state_dict(ours.mask_head.convs[2 * i].state_dict())
        mask_predictor.conv5_mask.load_state_dict(ours.mask_head.deconv.state_dict())
        mask_predictor.mask_fcn_logits.weight[1:] = ours.mask_head.predictor.weight
        mask_predictor.mask_fcn_logits.bias[1:] = ours.mask_head.predictor.bias
        kp_head.load_state_dict(ours.keypoint_head.convs.state_dict())
        kp_predictor.kps_score_lowres.load_state_dict(ours.keypoint_head.score_lowres.state_dict())
    names = list(STRIDES)
    theirs = torchvision_roi_heads(
        box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
        box_head=box_head,
        box_predictor=predictor,
        mask_roi_pool=MultiScaleRoIAlign(names, 14, 2),
        mask_head=mask_head,
        mask_predictor=mask_predictor,
        keypoint_roi_pool=MultiScaleRoIAlign(names, 14, 2),
        keypoint_head=kp_head,
        keypoint_predictor=kp_predictor,
    ).eval()

    g = torch.Generator().manual_seed(10)
    features = make_features()
    boxes = [image_boxes(25, size, g, max_side=50) for size in IMAGE_SIZES]
    images = ImageList(torch.zeros(2, 3, IMAGE, IMAGE), IMAGE_SIZES)
    proposals = [Instances(s, proposal_boxes=Boxes(b)) for s, b in zip(IMAGE_SIZES, boxes)]
    with torch.no_grad():
        detections, _ = ours(images, dict(features), proposals)
        # torchvision infers the pooler scales from the largest image: 64 x 64 here.
        reference, _ = theirs(features, boxes, IMAGE_SIZES)
    for det, ref in zip(detections, reference):
        assert len(det) == len(ref["boxes"]) > 0
        torch.testing.assert_close(det.pred_boxes.tensor, ref["boxes"])
        torch.testing.assert_close(det.scores, ref["scores"])
        assert torch.equal(det.pred_classes, ref["labels"] - 1)
        torch.testing.assert_close(det.pred_masks, ref["masks"][:, 0])
        torch.testing.assert_close(det.pred_keypoints[..., :2], ref["keypoints"][..., :2])
        torch.testing.assert_close(det.pred_keypoints[..., 2], ref["keypoints_scores"])
