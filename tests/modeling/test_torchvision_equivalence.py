"""lazydet with torchvision's weights returns torchvision's detections (the reference).

Each test builds a torchvision detector with random weights (``weights=None``), makes it produce
many detections (biased class logits, data-calibrated batch norms), converts its state dict with
``load_weights`` into lazydet's torchvision preset, feeds both the same float image, and compares
boxes, scores, labels (and masks / keypoints) after both rescaled them to the original size.

Sizes: the image is already at torchvision's resize target (``min_size``/``max_size`` set to its
size, so torchvision's resize is the identity), and its sides are multiples of the coarsest
stride. The latter matters: torchvision computes each level's anchor stride as ``padded image
size // feature size``, which is not the level's true stride when the padded size is not a
multiple of it (e.g. 800 // 7 = 114 for P7 of an 800-pixel image); lazydet uses the true stride.

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
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d

from lazydet.config import compose, instantiate
from lazydet.modeling.weights import load_weights

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


def _freeze_batchnorms(module: nn.Module) -> None:
    """Replace BatchNorm2d by FrozenBatchNorm2d, as torchvision does for pretrained backbones."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            _freeze_batchnorms(child)


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
    _freeze_batchnorms(tv_model)
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
