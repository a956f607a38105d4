"""lazydet with torchvision's weights returns torchvision's detections (the reference).

Each test builds a torchvision detector with random weights (``weights=None``), makes it produce
many detections (biased class logits, data-calibrated batch norms), converts its state dict with
``load_weights`` into lazydet's torchvision preset, feeds both the same float image, and compares
boxes, scores, labels (and masks / keypoints) after both rescaled them to the original size.

Sizes: the first tests use small synthetic images already at torchvision's resize target
(``min_size``/``max_size`` set to their size, so torchvision's resize is the identity). The
tests at the end use real COCO photos at torchvision's default size (short side 800), where the
padded size is rarely a multiple of the coarsest stride and torchvision spaces anchors by
``padded image size // feature size`` (e.g. 800 // 13 = 61 for P6), as the presets do.

Inputs and tolerance: torchvision normalises 0-1 images, ``(x - 0.485) / 0.229``; lazydet 0-255
images, ``(255x - 123.675) / 58.395``. The two differ by float rounding (~5e-7), which a random
50-layer network amplifies to ~3e-5 relative in its features. RetinaNet is compared both ways:
torchvision on 0-1 images (``rtol=1e-4, atol=1e-4``) and torchvision normalising the same 0-255
values with its statistics x 255 (asserted to 1e-5; identical in practice). The R-CNNs are
compared the second way, to ``rtol=1e-4, atol=1e-4``: on 0-1 images the amplified rounding
exceeded it (one box coordinate in 160 off by 1.5e-3 px), which is about the random network, not
about lazydet.
"""

from __future__ import annotations

import pytest
import torch
from helpers import freeze_batchnorms
from PIL import Image
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.transforms.functional import pil_to_tensor

from lazydet.checkpoint import load_weights
from lazydet.config import compose, instantiate

# Multiples of 128 (RetinaNet's P7 stride) and 64 (the R-CNNs' P6 stride), and small: a ResNet-50
# forward pass on 2 shared CPU cores is the cost of these tests.
RETINANET_SIZE = (128, 256)
RCNN_SIZE = (128, 192)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def _test_image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A smooth random float RGB image in [0, 1], ``[3, *size]``."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size[0] // 16, size[1] // 16, generator=generator)
    return nn.functional.interpolate(coarse, size=size, mode="bilinear")[0].clamp(0, 1)


def _calibrate_backbone(tv_model: nn.Module, image: torch.Tensor) -> None:
    """Random affine norms, running statistics of ``image``: activations stay O(1) in 50 layers.

    (``weights_backbone=None`` builds BatchNorm2d with identity statistics, under which random
    ResNet activations grow by orders of magnitude.)
    """
    norms = [m for m in tv_model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # running statistics = this batch's statistics
            norm.train()
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.normal_(norm.bias, 0.0, 0.1)
        tv_model.backbone(((image - IMAGENET_MEAN) / IMAGENET_STD)[None])
    freeze_batchnorms(tv_model)
    tv_model.eval()


def _lazydet_model(experiment: str, overrides: list[str], tv_model: nn.Module) -> nn.Module:
    cfg = compose(experiment, ["dataset=shapes", *overrides])
    model = instantiate(cfg.model).eval()
    report = load_weights(model, tv_model.state_dict())
    assert report.naming == "torchvision"
    assert not report.unexpected and not report.mismatched, str(report)
    return model


def _use_0_255_scale(tv_model: nn.Module, model: nn.Module) -> None:
    """Make torchvision normalise 0-255 images with its statistics x 255, as lazydet does.

    The same function as on 0-1 images, minus the float rounding of the two normalisations, so
    every remaining difference comes from the models. Also checks that the preset's pixel
    statistics are torchvision's.
    """
    transform = tv_model.transform
    transform.image_mean = [value * 255 for value in transform.image_mean]
    transform.image_std = [value * 255 for value in transform.image_std]
    torch.testing.assert_close(model.pixel_mean.flatten().tolist(), transform.image_mean)
    torch.testing.assert_close(model.pixel_std.flatten().tolist(), transform.image_std)


def _assert_same(tv_output: dict, instances, label_offset: int) -> None:
    assert len(instances) == len(tv_output["boxes"]) > 0
    torch.testing.assert_close(instances.pred_boxes.tensor, tv_output["boxes"], **TOLERANCE)
    torch.testing.assert_close(instances.scores, tv_output["scores"], **TOLERANCE)
    torch.testing.assert_close(instances.pred_classes + label_offset, tv_output["labels"])


def _torchvision_retinanet(num_classes: int, image: torch.Tensor, top_k: int) -> nn.Module:
    tv_model = detection.retinanet_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        min_size=min(RETINANET_SIZE),
        max_size=max(RETINANET_SIZE),
        topk_candidates=top_k,
        detections_per_img=top_k,
    )
    _calibrate_backbone(tv_model, image)
    with torch.no_grad():
        # Most anchors above the 0.05 score threshold; boxes visibly moved off their anchors.
        nn.init.normal_(tv_model.head.classification_head.cls_logits.bias, -2.0, 1.0)
        nn.init.normal_(tv_model.head.regression_head.bbox_reg.weight, 0.0, 0.02)
    return tv_model


def _lazydet_retinanet(num_classes: int, top_k: int, tv_model: nn.Module) -> nn.Module:
    overrides = [
        f"model.num_classes={num_classes}",
        f"model.topk_candidates={top_k}",
        f"model.max_detections_per_image={top_k}",
    ]
    return _lazydet_model("torchvision_retinanet_fpn", overrides, tv_model)


def test_retinanet_matches_torchvision() -> None:
    torch.manual_seed(0)
    height, width = RETINANET_SIZE
    image = _test_image(RETINANET_SIZE)
    tv_model = _torchvision_retinanet(5, image, top_k=100)
    model = _lazydet_retinanet(5, 100, tv_model)

    # torchvision as users call it: 0-1 images.
    with torch.no_grad():
        expected = tv_model([image])[0]
        got = model([{"image": image * 255, "height": height, "width": width}])[0]["instances"]
    assert len(got) >= 50  # many candidates competed
    _assert_same(expected, got, label_offset=0)

    # Reported at the original size of an image the pipeline resized (x2): torchvision gets the
    # original and resizes it inside; lazydet gets torchvision's resized image (as lazydet's data
    # mapper would give it) and the original size in height/width.
    original = nn.functional.interpolate(image[None], scale_factor=0.5, mode="bilinear")[0]
    out_h, out_w = original.shape[-2:]
    with torch.no_grad():
        resized, _ = tv_model.transform.resize(original, None)
        assert resized.shape[-2:] == RETINANET_SIZE
        expected = tv_model([original])[0]
        got = model([{"image": resized * 255, "height": out_h, "width": out_w}])[0]["instances"]
    assert got.image_size == (out_h, out_w)
    _assert_same(expected, got, label_offset=0)

    # Normalising the same 0-255 values on both sides leaves no difference at all.
    _use_0_255_scale(tv_model, model)
    with torch.no_grad():
        expected = tv_model([image * 255])[0]
        got = model([{"image": image * 255, "height": height, "width": width}])[0]["instances"]
    torch.testing.assert_close(got.pred_boxes.tensor, expected["boxes"], rtol=0, atol=1e-5)
    torch.testing.assert_close(got.scores, expected["scores"], rtol=0, atol=1e-6)


def _bias_rcnn_towards_detections(tv_model: nn.Module) -> None:
    """Spread objectness and class scores so that many proposals and detections survive."""
    with torch.no_grad():
        nn.init.normal_(tv_model.rpn.head.cls_logits.bias, 0.0, 1.0)
        nn.init.normal_(tv_model.rpn.head.bbox_pred.weight, 0.0, 0.02)
        predictor = tv_model.roi_heads.box_predictor
        nn.init.normal_(predictor.cls_score.weight, 0.0, 0.05)
        nn.init.normal_(predictor.cls_score.bias, 0.0, 1.0)
        predictor.cls_score.bias[0] -= 2.0  # the background: fewer of the ROIs go to it
        nn.init.normal_(predictor.bbox_pred.weight, 0.0, 0.01)


# torchvision constructor keywords and the lazydet overrides that set the same limits; small
# top-k values keep the test fast (both sides use them).
_RCNN_LIMITS = {
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "box_detections_per_img": 40,
}
_RCNN_LIMIT_OVERRIDES = [
    "model.proposal_generator.pre_nms_topk_test=300",
    "model.proposal_generator.post_nms_topk_test=150",
    "+model.roi_heads.box_predictor.test_topk_per_image=40",
]


@pytest.mark.parametrize("kind", ["faster", "mask", "keypoint"])
def test_rcnn_matches_torchvision(kind: str) -> None:
    torch.manual_seed(0)
    height, width = RCNN_SIZE
    image = _test_image(RCNN_SIZE, seed=2)
    num_classes = 1 if kind == "keypoint" else 4  # foreground classes
    num_keypoints = 5
    builder = {
        "faster": detection.fasterrcnn_resnet50_fpn,
        "mask": detection.maskrcnn_resnet50_fpn,
        "keypoint": detection.keypointrcnn_resnet50_fpn,
    }[kind]
    extra = {"num_keypoints": num_keypoints} if kind == "keypoint" else {}
    tv_model = builder(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes + 1,
        min_size=min(RCNN_SIZE),
        max_size=max(RCNN_SIZE),
        **_RCNN_LIMITS,
        **extra,
    )
    overrides = [f"model.roi_heads.num_classes={num_classes}", *_RCNN_LIMIT_OVERRIDES]
    if kind == "keypoint":
        # 64 instead of 512 channels in the 8 convs: same structure, 1/64 of the time.
        tv_model.roi_heads.keypoint_head = KeypointRCNNHeads(256, [64] * 8)
        tv_model.roi_heads.keypoint_predictor = KeypointRCNNPredictor(64, num_keypoints)
        overrides += [
            f"model.roi_heads.keypoint_head.num_keypoints={num_keypoints}",
            "model.roi_heads.keypoint_head.conv_dims=[64,64,64,64,64,64,64,64]",
        ]
    _calibrate_backbone(tv_model, image)
    _bias_rcnn_towards_detections(tv_model)
    model = _lazydet_model(f"torchvision_{kind}_rcnn_fpn", overrides, tv_model)
    model.mask_threshold = None  # compare torchvision's mask probabilities
    _use_0_255_scale(tv_model, model)

    with torch.no_grad():
        expected = tv_model([image * 255])[0]
        got = model([{"image": image * 255, "height": height, "width": width}])[0]["instances"]
    assert len(got) >= 10
    _assert_same(expected, got, label_offset=1)
    if kind == "mask":
        torch.testing.assert_close(got.pred_masks, expected["masks"][:, 0], **TOLERANCE)
    if kind == "keypoint":
        torch.testing.assert_close(
            got.pred_keypoints[..., :2], expected["keypoints"][..., :2], **TOLERANCE
        )
        torch.testing.assert_close(
            got.pred_keypoints[..., 2], expected["keypoints_scores"], **TOLERANCE
        )


# ---------------------------------------------------------------------------------------------
# Real photos at torchvision's default size (short side 800, long side at most 1333)
#
# At that size the padded batch (multiples of 32) is rarely a multiple of P6's stride 64 or P7's
# 128: a 640x425 photo becomes 800x1205, padded to 800x1216, whose P6 has 13 rows that
# torchvision spaces 800 // 13 = 61 pixels apart. The presets space anchors the same way
# (``DefaultAnchorGenerator(spacing="padded_size")``); with the true stride 5-13 % of the
# detections differed. Both models get the same float image: torchvision resizes it inside,
# lazydet gets torchvision's resized image (what a data pipeline would give) with the original
# ``height``/``width``, and both report at the original size.

PHOTOS = ("000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "000000197388.jpg")


def _photo(shared_data, name: str) -> torch.Tensor:
    """A real COCO photo as a float ``[3, H, W]`` image in [0, 1]."""
    path = shared_data / "coco_person_val2017" / name
    if not path.is_file():
        pytest.skip(f"reference photo {path} is absent")
    with Image.open(path) as image:
        return pil_to_tensor(image.convert("RGB")).float() / 255


def _default_size_outputs(tv_model: nn.Module, model: nn.Module, photo: torch.Tensor):
    """torchvision's and lazydet's detections on ``photo`` at torchvision's default resize.

    torchvision's transform resizes (to short side 800, long side at most 1333) the image it
    normalised; lazydet normalises the image its data pipeline resized. Both orders compute the
    same function, but their float roundings differ (~7e-7), which a random 50-layer network
    amplifies past any useful tolerance. So the photo is resized once, by torchvision's own
    resize, and both models get that image: torchvision with its resize made the identity
    (``min_size``/``max_size`` set to the image's sides), then its own ``postprocess`` back to the
    photo's size; lazydet with the photo's size as ``height``/``width``.
    """
    _use_0_255_scale(tv_model, model)
    original = photo * 255
    transform = tv_model.transform
    defaults = transform.min_size, transform.max_size
    with torch.no_grad():
        resized, _ = transform.resize(original, None)  # torchvision's default resize
        size = tuple(resized.shape[-2:])
        transform.min_size, transform.max_size = (min(size),), max(size)
        # The model's own postprocess would paste masks at the resized size; run it once, below.
        transform.postprocess = lambda result, image_shapes, original_sizes: result
        try:
            expected = tv_model([resized])[0]
        finally:
            transform.min_size, transform.max_size = defaults
            del transform.postprocess
        (expected,) = transform.postprocess([expected], [size], [tuple(photo.shape[-2:])])
        inputs = {"image": resized, "height": photo.shape[1], "width": photo.shape[2]}
        got = model([inputs])[0]["instances"]
    assert min(size) == 800 or max(size) == 1333
    return size, expected, got


def _favour_coarse_levels(tv_model: nn.Module, gain: float = 4.0) -> None:
    """Let the coarse levels compete for the detections, as they do with trained weights.

    With random weights every level's scores follow one distribution, so the top-k go to the
    fine levels (they have the most anchors) and no detection comes from P6 (R-CNN) or P6/P7
    (RetinaNet, whose P6 is computed from P5): the one place where torchvision's anchor spacing
    differs. Amplifying P5 (hence P6/P7) and making the scores depend on the features brings
    large boxes into the output, and a preset with the wrong spacing then fails. ``gain``
    multiplies P5; the full-size R-CNNs need more of it to keep large boxes among their 100
    detections.
    """
    with torch.no_grad():
        conv = tv_model.backbone.fpn.layer_blocks[-1][0]
        conv.weight.mul_(gain)
        conv.bias.mul_(gain)
        if hasattr(tv_model, "rpn"):
            nn.init.normal_(tv_model.rpn.head.cls_logits.weight, 0.0, 0.1)
        else:
            nn.init.normal_(tv_model.head.classification_head.cls_logits.weight, 0.0, 0.05)


def _has_coarse_level_boxes(instances, resized_height: int, kind: str) -> bool:
    """Whether some detection is about the size of a P6/P7 anchor (not a P2-P5 one).

    Measured in the resized image: sqrt(area) above 362 (R-CNN: between P5's 256 and P6's 512)
    or 230 (RetinaNet: between P5's largest 203 and P6's smallest 256).
    """
    boxes = instances.pred_boxes.tensor * (resized_height / instances.image_size[0])
    sides = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    return bool((sides > (230.0 if kind == "retinanet" else 362.0)).any())


def _tie_order(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Detection order by score, and by box among exactly tied scores.

    Real photos give many random-weight detections, some with bit-identical scores, which the
    two libraries' NMS return in either order; the same detections, the same values.
    """
    order = torch.arange(len(scores))
    for key in (boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -scores):
        order = order[key[order].sort(stable=True).indices]
    return order


def _in_tie_order(expected: dict, got):
    tv_order = _tie_order(expected["boxes"], expected["scores"])
    expected = {key: value[tv_order] for key, value in expected.items()}
    return expected, got[_tie_order(got.pred_boxes.tensor, got.scores)]


def _padded(size: tuple[int, int]) -> tuple[int, int]:
    return tuple(-(-side // 32) * 32 for side in size)


def test_small_faster_rcnn_matches_torchvision_on_a_real_photo_at_default_size(
    shared_data,
) -> None:
    """torchvision's own ``FasterRCNN`` code at its default size, on a ResNet-18 FPN with 64
    channels (the code path of ``fasterrcnn_resnet50_fpn`` at a fifth of the cost; the R-50
    presets are compared in the slow tests below)."""
    from torchvision.models import resnet18
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    torch.manual_seed(0)
    photo = _photo(shared_data, PHOTOS[0])
    num_classes, channels = 4, 64
    backbone = BackboneWithFPN(
        resnet18(),
        return_layers={f"layer{k}": str(k - 1) for k in range(1, 5)},
        in_channels_list=[64, 128, 256, 512],
        out_channels=channels,
    )
    tv_model = detection.FasterRCNN(
        backbone,
        box_head=TwoMLPHead(channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes + 1),
        **_RCNN_LIMITS,
    )
    resized, _ = tv_model.transform.resize(photo, None)
    _calibrate_backbone(tv_model, resized)
    _bias_rcnn_towards_detections(tv_model)
    _favour_coarse_levels(tv_model)
    overrides = [
        "model/backbone=resnet18",
        f"model.backbone.out_channels={channels}",
        "model.roi_heads.box_head.fc_dims=[256,256]",
        f"model.roi_heads.num_classes={num_classes}",
        *_RCNN_LIMIT_OVERRIDES,
    ]
    model = _lazydet_model("torchvision_faster_rcnn_fpn", overrides, tv_model)

    size, expected, got = _default_size_outputs(tv_model, model, photo)
    expected, got = _in_tie_order(expected, got)
    assert _padded(size)[0] % 64 != 0  # P6's spacing is not its stride on this image
    assert len(got) >= 10 and _has_coarse_level_boxes(got, size[0], "faster")
    _assert_same(expected, got, label_offset=1)


def _full_rcnn(kind: str, num_classes: int, photo: torch.Tensor) -> nn.Module:
    builder = {
        "faster": detection.fasterrcnn_resnet50_fpn,
        "mask": detection.maskrcnn_resnet50_fpn,
        "keypoint": detection.keypointrcnn_resnet50_fpn,
    }[kind]
    tv_model = builder(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    _calibrate_backbone(tv_model, tv_model.transform.resize(photo, None)[0])
    _bias_rcnn_towards_detections(tv_model)
    _favour_coarse_levels(tv_model, gain=16.0)
    with torch.no_grad():  # class scores that follow the (amplified) pooled features
        nn.init.normal_(tv_model.roi_heads.box_predictor.cls_score.weight, 0.0, 0.2)
    return tv_model


@pytest.mark.slow
@pytest.mark.parametrize("photo_name", PHOTOS)
@pytest.mark.parametrize("kind", ["faster", "mask", "keypoint", "retinanet"])
def test_presets_match_torchvision_on_real_photos_at_default_size(
    shared_data, kind: str, photo_name: str
) -> None:
    """The four R-50 presets, full-size heads and torchvision's default limits, on real photos."""
    torch.manual_seed(0)
    photo = _photo(shared_data, photo_name)
    if kind == "retinanet":
        tv_model = detection.retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=5
        )
        _calibrate_backbone(tv_model, tv_model.transform.resize(photo, None)[0])
        with torch.no_grad():
            nn.init.normal_(tv_model.head.classification_head.cls_logits.bias, -2.0, 1.0)
            nn.init.normal_(tv_model.head.regression_head.bbox_reg.weight, 0.0, 0.02)
        _favour_coarse_levels(tv_model)
        model = _lazydet_model("torchvision_retinanet_fpn", ["model.num_classes=5"], tv_model)
        label_offset = 0
    else:
        num_classes = 1 if kind == "keypoint" else 4
        tv_model = _full_rcnn(kind, num_classes, photo)
        overrides = [f"model.roi_heads.num_classes={num_classes}"]
        if kind == "keypoint":
            overrides.append("model.roi_heads.keypoint_head.num_keypoints=17")
        model = _lazydet_model(f"torchvision_{kind}_rcnn_fpn", overrides, tv_model)
        model.mask_threshold = None
        label_offset = 1

    size, expected, got = _default_size_outputs(tv_model, model, photo)
    expected, got = _in_tie_order(expected, got)
    assert len(got) >= 10 and _has_coarse_level_boxes(got, size[0], kind)
    _assert_same(expected, got, label_offset=label_offset)
    if kind == "mask":
        torch.testing.assert_close(got.pred_masks, expected["masks"][:, 0], **TOLERANCE)
    if kind == "keypoint":
        torch.testing.assert_close(got.pred_keypoints[..., :2], expected["keypoints"][..., :2])
        torch.testing.assert_close(got.pred_keypoints[..., 2], expected["keypoints_scores"])
