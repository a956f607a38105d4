"""GeneralizedRCNN: heads built from the backbone's shapes, training on a tiny synthetic batch,
inference in original image coordinates, and configs written with lazydet.config."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import losses_before_and_after_steps
from torch import nn

from lazydet.config import L, instantiate
from lazydet.layers import ShapeSpec
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone import FPN, Backbone, ResNet
from lazydet.modeling.meta_arch import GeneralizedRCNN
from lazydet.modeling.postprocessing import paste_masks_in_image
from lazydet.modeling.proposal import RPN
from lazydet.modeling.roi_heads import (
    FastRCNNConvFCHead,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    StandardROIHeads,
)
from lazydet.structures import BitMasks, Boxes, Instances, Keypoints

CHANNELS = 16
NUM_CLASSES = 3
NUM_KEYPOINTS = 4
LEVELS = ("p2", "p3", "p4", "p5", "p6")


class TinyPyramid(Backbone):
    """p2..p6 (strides 4..64) with CHANNELS channels from a few strided convs."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2, 1)
        )
        self.downs = nn.ModuleList(nn.Conv2d(channels, channels, 3, 2, 1) for _ in range(3))
        self.channels = channels

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        out = {"p2": x}
        for level, down in enumerate(self.downs, start=3):
            x = down(F.relu(x))
            out[f"p{level}"] = x
        out["p6"] = F.max_pool2d(x, kernel_size=1, stride=2)
        return out

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f"p{lv}": ShapeSpec(channels=self.channels, stride=2**lv) for lv in range(2, 7)}

    @property
    def size_divisibility(self) -> int:
        return 32


def rpn_factory() -> functools.partial:
    return functools.partial(
        RPN,
        in_features=LEVELS,
        anchor_generator=DefaultAnchorGenerator(sizes=[[8], [16], [32], [64], [128]]),
        batch_size_per_image=64,
        post_nms_topk_train=100,
        post_nms_topk_test=50,
    )


def roi_heads_factory(*, mask: bool = True, keypoint: bool = True) -> functools.partial:
    return functools.partial(
        StandardROIHeads,
        num_classes=NUM_CLASSES,
        box_head=functools.partial(FastRCNNConvFCHead, fc_dims=(64, 64)),
        mask_head=functools.partial(MaskRCNNConvUpsampleHead, conv_dims=(16, 16)) if mask else None,
        keypoint_head=functools.partial(
            KRCNNConvDeconvUpsampleHead, num_keypoints=NUM_KEYPOINTS, conv_dims=(16, 16)
        )
        if keypoint
        else None,
        mask_pooler_resolution=7,
        keypoint_pooler_resolution=7,
        batch_size_per_image=64,
    )


def tiny_model(**kwargs) -> GeneralizedRCNN:
    torch.manual_seed(0)
    options = {
        "backbone": TinyPyramid(),
        "proposal_generator": rpn_factory(),
        "roi_heads": roi_heads_factory(),
        "pixel_mean": [128.0] * 3,
        "pixel_std": [64.0] * 3,
    }
    options.update(kwargs)
    return GeneralizedRCNN(**options)


def synthetic_batch(height: int | None = None, width: int | None = None) -> list[dict]:
    """Two 64x64 images, each with two flat-coloured rectangles (boxes, masks, keypoints)."""
    g = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[8.0, 8.0, 30.0, 40.0], [34.0, 20.0, 60.0, 50.0]])
    batch = []
    for _ in range(2):
        image = torch.randint(0, 50, (3, 64, 64), generator=g, dtype=torch.uint8)
        masks = torch.zeros(2, 64, 64, dtype=torch.bool)
        for j, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            masks[j, y1:y2, x1:x2] = True
            image[:, y1:y2, x1:x2] = 200 if j == 0 else 120
        corners = torch.tensor([[3.0, 3.0], [13.0, 3.0], [3.0, 13.0], [11.0, 11.0]])
        keypoints = torch.cat(
            (boxes[:, None, :2] + corners, torch.full((2, NUM_KEYPOINTS, 1), 2.0)), dim=2
        )
        instances = Instances(
            (64, 64),
            gt_boxes=Boxes(boxes.clone()),
            gt_classes=torch.tensor([0, 2]),
            gt_masks=BitMasks(masks),
            gt_keypoints=Keypoints(keypoints),
        )
        inputs = {"image": image, "instances": instances}
        if height is not None:
            inputs.update(height=height, width=width)
        batch.append(inputs)
    return batch


def test_heads_are_built_from_the_backbone_output_shape() -> None:
    model = tiny_model()
    assert isinstance(model.proposal_generator, RPN)
    assert isinstance(model.roi_heads, StandardROIHeads)
    assert model.proposal_generator.head.objectness_logits.in_channels == CHANNELS
    assert model.roi_heads.box_head.layers[1].in_features == CHANNELS * 7 * 7
    assert model.roi_heads.mask_head.convs[0].in_channels == CHANNELS
    assert model.roi_heads.keypoint_head.convs[0].in_channels == CHANNELS
    assert model.roi_heads.box_pooler.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    # Built modules are taken as they are.
    roi_heads = roi_heads_factory()(input_shape=TinyPyramid().output_shape())
    assert tiny_model(roi_heads=roi_heads).roi_heads is roi_heads


def test_training_returns_all_losses_and_steps_reduce_them() -> None:
    model = tiny_model()
    batch = synthetic_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)

    def losses_at(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)  # same anchor and ROI sampling for the before/after comparison
        return model(batch)

    model.train()
    before, after = losses_before_and_after_steps(losses_at, optimizer, steps=12)
    assert set(before) == {
        "loss_rpn_cls",
        "loss_rpn_loc",
        "loss_cls",
        "loss_box_reg",
        "loss_mask",
        "loss_keypoint",
    }
    # The box regression loss starts near 0 (only the appended ground-truth boxes are foreground
    # among random proposals) and grows as the RPN improves: test_roi_heads checks it decreases
    # on fixed proposals.
    for name in ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_mask", "loss_keypoint"):
        assert after[name] < 0.95 * before[name], (name, before[name], after[name])


def test_inference_reports_detections_at_the_requested_size() -> None:
    model = tiny_model().eval()
    batch = synthetic_batch(height=128, width=96)
    outputs = model(batch)
    raw = model.inference(batch, do_postprocess=False)
    assert len(outputs) == 2
    for output, unscaled in zip(outputs, raw):
        instances, small = output["instances"], unscaled["instances"]
        assert instances.image_size == (128, 96) and small.image_size == (64, 64)
        assert len(instances) == len(small) > 0
        # x scales by 96 / 64, y by 128 / 64 (no box is empty after scaling).
        scale = torch.tensor([1.5, 2.0, 1.5, 2.0])
        torch.testing.assert_close(instances.pred_boxes.tensor, small.pred_boxes.tensor * scale)
        torch.testing.assert_close(instances.scores, small.scores)
        assert torch.equal(instances.pred_classes, small.pred_classes)
        torch.testing.assert_close(
            instances.pred_keypoints,
            small.pred_keypoints * torch.tensor([1.5, 2.0, 1.0]),
        )
        assert small.pred_masks.shape == (len(small), 14, 14)
        assert instances.pred_masks.dtype == torch.bool
        assert instances.pred_masks.shape == (len(instances), 128, 96)
        expected_masks = paste_masks_in_image(
            small.pred_masks, instances.pred_boxes.tensor, (128, 96)
        )
        assert torch.equal(instances.pred_masks, expected_masks >= 0.5)


def test_faster_rcnn_and_precomputed_proposals() -> None:
    faster = tiny_model(roi_heads=roi_heads_factory(mask=False, keypoint=False)).eval()
    (output,) = faster(synthetic_batch()[:1])
    assert set(output["instances"].get_fields()) == {"pred_boxes", "scores", "pred_classes"}

    # Without a proposal generator the proposals come with the inputs.
    no_rpn = tiny_model(
        proposal_generator=None, roi_heads=roi_heads_factory(mask=False, keypoint=False)
    )
    batch = synthetic_batch()
    for inputs in batch:
        boxes = torch.tensor(
            [[4.0, 4.0, 34.0, 44.0], [30.0, 16.0, 62.0, 54.0], [0.0, 0.0, 64.0, 64.0]]
        )
        inputs["proposals"] = Instances((64, 64), proposal_boxes=Boxes(boxes))
    losses = no_rpn.train()(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    outputs = no_rpn.eval()(batch)
    assert all(len(o["instances"]) > 0 for o in outputs)
    del batch[0]["proposals"]
    with pytest.raises(ValueError, match="precomputed 'proposals'"):
        no_rpn(batch)


def test_bgr_input_format_flips_channels_before_normalising() -> None:
    model = tiny_model(input_format="BGR", pixel_mean=[10.0, 20.0, 30.0], pixel_std=[1.0, 2.0, 4.0])
    image = torch.tensor([100.0, 50.0, 20.0]).view(3, 1, 1).expand(3, 4, 4)
    images = model.preprocess_image([{"image": image}])
    # RGB (100, 50, 20) -> BGR (20, 50, 100) -> ((20-10)/1, (50-20)/2, (100-30)/4).
    torch.testing.assert_close(images.tensor[0, :, 0, 0], torch.tensor([10.0, 15.0, 17.5]))
    assert images.tensor.shape[-2:] == (32, 32)  # padded to the backbone's size_divisibility
    assert images.image_sizes == [(4, 4)]


def test_bad_inputs_raise_clear_errors() -> None:
    model = tiny_model()
    batch = synthetic_batch()
    del batch[1]["instances"]
    with pytest.raises(ValueError, match="needs 'instances'"):
        model.train()(batch)
    with pytest.raises(ValueError, match="'image' tensor"):
        model.eval()([{"image": torch.zeros(64, 64)}])
    with pytest.raises(TypeError, match="roi_heads must be an nn.Module or a callable"):
        tiny_model(roi_heads="StandardROIHeads")
    with pytest.raises(ValueError, match="input_format"):
        tiny_model(input_format="YUV")


def test_lazy_config_builds_heads_from_the_backbone() -> None:
    """A config names no channel count or stride: the partial nodes receive the backbone's."""
    cfg = L(GeneralizedRCNN)(
        backbone=L(FPN)(
            bottom_up=L(ResNet)(depth=18, out_features=["res2", "res3", "res4", "res5"]),
            out_channels=32,
        ),
        proposal_generator=L(RPN)(
            in_features=list(LEVELS),
            anchor_generator=L(DefaultAnchorGenerator)(sizes=[[32], [64], [128], [256], [512]]),
            _partial_=True,
        ),
        roi_heads=L(StandardROIHeads)(
            num_classes=5,
            box_head=L(FastRCNNConvFCHead)(fc_dims=[64], _partial_=True),
            mask_head=L(MaskRCNNConvUpsampleHead)(conv_dims=[8], _partial_=True),
            _partial_=True,
        ),
    )
    model = instantiate(cfg)
    assert model.roi_heads.box_head.layers[1].in_features == 32 * 7 * 7
    assert model.roi_heads.mask_head.convs[0].in_channels == 32
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert model.proposal_generator.head.objectness_logits.in_channels == 32
    (output,) = model.eval()([{"image": torch.zeros(3, 64, 48, dtype=torch.uint8)}])
    assert output["instances"].image_size == (64, 48)


def test_inference_without_detections_returns_empty_fields() -> None:
    model = tiny_model().eval()
    model.roi_heads.box_predictor.test_score_thresh = 1.0  # no probability exceeds 1
    (output,) = model(synthetic_batch(height=40, width=50)[:1])
    instances = output["instances"]
    assert len(instances) == 0 and instances.image_size == (40, 50)
    assert instances.pred_boxes.tensor.shape == (0, 4)
    assert instances.pred_masks.shape == (0, 40, 50)
    assert instances.pred_keypoints.shape == (0, NUM_KEYPOINTS, 3)
