"""RetinaNet head, losses and inference against torchvision's RetinaNet; a tiny training run."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList as TorchvisionImageList
from torchvision.models.detection.retinanet import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead as TorchvisionRetinaNetHead

from lazydet.layers import ShapeSpec
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead
from lazydet.structures import Boxes, Instances

CHANNELS, NUM_CLASSES = 8, 3
STRIDES = {"p3": 8, "p4": 16}
SIZES = ((16, 20, 25), (32, 40, 50))
PADDED = 64
IMAGE_SIZES = [(64, 60), (50, 64)]


class TinyBackbone(Backbone):
    """Two strided convs standing in for an FPN: p3 (stride 8) and p4 (stride 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.p3 = nn.Conv2d(3, CHANNELS, 8, stride=8)
        self.p4 = nn.Conv2d(CHANNELS, CHANNELS, 2, stride=2)

    def forward(self, images):
        p3 = self.p3(images)
        return {"p3": p3, "p4": self.p4(p3)}

    def output_shape(self):
        return {name: ShapeSpec(channels=CHANNELS, stride=s) for name, s in STRIDES.items()}

    @property
    def size_divisibility(self) -> int:
        return 16


def anchor_generator() -> DefaultAnchorGenerator:
    return DefaultAnchorGenerator(
        sizes=SIZES,
        aspect_ratios=(0.5, 1.0, 2.0),
        round_base_anchors=True,
        cell_anchor_order="ratio_major",
    )


def build_pair(**overrides):
    torch.manual_seed(0)
    tv_head = TorchvisionRetinaNetHead(CHANNELS, 9, NUM_CLASSES)
    for p in tv_head.parameters():
        nn.init.normal_(p, std=0.1)
    backbone = nn.Identity()
    backbone.out_channels = CHANNELS
    options = {
        "loss_normalizer": "per_image",
        "smooth_l1_beta": 0.0,
        "score_threshold": 0.3,
        "topk_candidates": 40,
        "nms_threshold": 0.5,
        "max_detections_per_image": 30,
        **overrides,
    }
    theirs = TorchvisionRetinaNet(
        backbone,
        NUM_CLASSES,
        anchor_generator=AnchorGenerator(SIZES, ((0.5, 1.0, 2.0),) * 2),
        head=tv_head,
        score_thresh=options["score_threshold"],
        nms_thresh=options["nms_threshold"],
        detections_per_img=options["max_detections_per_image"],
        topk_candidates=options["topk_candidates"],
    )
    ours = RetinaNet(
        backbone=TinyBackbone(),
        head_in_features=list(STRIDES),
        anchor_generator=anchor_generator(),
        num_classes=NUM_CLASSES,
        **options,
    )
    for ours_tower, tv_tower in (
        (ours.head.cls_subnet, tv_head.classification_head.conv),
        (ours.head.bbox_subnet, tv_head.regression_head.conv),
    ):
        for i in range(4):
            ours_tower[2 * i].load_state_dict(tv_tower[i][0].state_dict())
    ours.head.cls_score.load_state_dict(tv_head.classification_head.cls_logits.state_dict())
    ours.head.bbox_pred.load_state_dict(tv_head.regression_head.bbox_reg.state_dict())
    return theirs, ours


def run_both(theirs, ours, seed: int):
    g = torch.Generator().manual_seed(seed)
    features = [
        torch.randn(2, CHANNELS, PADDED // s, PADDED // s, generator=g) for s in STRIDES.values()
    ]
    tv_images = TorchvisionImageList(torch.zeros(2, 3, PADDED, PADDED), IMAGE_SIZES)
    tv_outputs = theirs.head(features)
    tv_anchors = theirs.anchor_generator(tv_images, features)
    anchors = ours.anchor_generator(features, ours.strides)
    logits, deltas = ours.head(features)
    logits = [
        x.view(2, -1, NUM_CLASSES, *x.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, 3)
        for x in logits
    ]
    deltas = [x.view(2, -1, 4, *x.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, 3) for x in deltas]
    return tv_outputs, tv_anchors, anchors, logits, deltas


def test_head_outputs_match_torchvision():
    theirs, ours = build_pair()
    tv_outputs, tv_anchors, anchors, logits, deltas = run_both(theirs, ours, 0)
    torch.testing.assert_close(torch.cat(logits, 1), tv_outputs["cls_logits"])
    torch.testing.assert_close(torch.cat(deltas, 1), tv_outputs["bbox_regression"])
    torch.testing.assert_close(Boxes.cat(anchors).tensor, tv_anchors[0], rtol=0, atol=0)


def gt_boxes_and_classes(seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, (h, w) in zip((4, 0), IMAGE_SIZES):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        wh = torch.rand(n, 2, generator=g) * 30 + 8
        boxes = torch.cat((xy, torch.minimum(xy + wh, torch.tensor([w, h]))), dim=1)
        out.append((boxes, torch.randint(0, NUM_CLASSES, (n,), generator=g)))
    return out


def test_losses_match_torchvision_per_image_normalisation():
    theirs, ours = build_pair()
    tv_outputs, tv_anchors, anchors, logits, deltas = run_both(theirs, ours, 1)
    gt = gt_boxes_and_classes(2)
    tv_losses = theirs.compute_loss(
        [{"boxes": b, "labels": c} for b, c in gt], tv_outputs, tv_anchors
    )
    instances = [
        Instances(size, gt_boxes=Boxes(b), gt_classes=c) for size, (b, c) in zip(IMAGE_SIZES, gt)
    ]
    gt_classes, matched = ours.label_anchors(anchors, instances)
    losses = ours.losses(anchors, logits, deltas, gt_classes, matched)
    assert (gt_classes[0] < NUM_CLASSES).sum() >= 4  # foreground exists
    torch.testing.assert_close(losses["loss_cls"], tv_losses["classification"])
    torch.testing.assert_close(losses["loss_box_reg"], tv_losses["bbox_regression"])


def test_inference_matches_torchvision_postprocess():
    theirs, ours = build_pair()
    tv_outputs, tv_anchors, anchors, logits, deltas = run_both(theirs, ours, 3)
    counts = [len(a) for a in anchors]
    split_outputs = {k: list(v.split(counts, dim=1)) for k, v in tv_outputs.items()}
    split_anchors = [list(a.split(counts)) for a in tv_anchors]
    with torch.no_grad():
        expected = theirs.postprocess_detections(split_outputs, split_anchors, IMAGE_SIZES)
    results = ours.decode_detections(anchors, logits, deltas, IMAGE_SIZES)
    for result, reference in zip(results, expected):
        assert len(result) == len(reference["boxes"]) > 5
        torch.testing.assert_close(result.pred_boxes.tensor, reference["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(result.scores, reference["scores"])
        assert torch.equal(result.pred_classes, reference["labels"])


def _labelled_batch(model):
    """Head outputs of seed 4 and the targets of gt seed 5, labelled by ``model``."""
    _, _, anchors, logits, deltas = run_both(*build_pair(), 4)
    gt = gt_boxes_and_classes(5)
    instances = [
        Instances(size, gt_boxes=Boxes(b), gt_classes=c) for size, (b, c) in zip(IMAGE_SIZES, gt)
    ]
    gt_classes, matched = model.label_anchors(anchors, instances)
    num_fg = int(((gt_classes >= 0) & (gt_classes < NUM_CLASSES)).sum())
    return anchors, logits, deltas, gt_classes, matched, num_fg


def test_ema_normaliser_by_hand():
    _, ours = build_pair(loss_normalizer="ema")
    _, per_image = build_pair()
    anchors, logits, deltas, gt_classes, matched, num_fg = _labelled_batch(ours)
    ema = ours.losses(anchors, logits, deltas, gt_classes, matched)
    reference = per_image.losses(anchors, logits, deltas, gt_classes, matched)
    # Detectron2's rule: the normaliser starts at 100 and moves 10% towards the batch's count.
    assert ours.foreground_ema == pytest.approx(0.9 * 100 + 0.1 * num_fg)
    # Image 1 has no ground truth, so only image 0 has a box loss: per_image gives
    # (box_0 / num_fg + 0) / 2, the EMA rule box_0 / ema.
    torch.testing.assert_close(
        ema["loss_box_reg"] * ours.foreground_ema, reference["loss_box_reg"] * 2 * num_fg
    )


def _ema_on_this_rank():
    """Per-rank body of the 2-process test (module level: spawned processes import it)."""
    from lazydet.utils import comm

    _, model = build_pair(loss_normalizer="ema")
    anchors, logits, deltas, gt_classes, matched, num_fg = _labelled_batch(model)
    if comm.get_rank() == 1:  # fewer foreground anchors here: half of them become background
        foreground = torch.nonzero((gt_classes >= 0) & (gt_classes < NUM_CLASSES))
        gone = foreground[: len(foreground) // 2]
        gt_classes[gone[:, 0], gone[:, 1]] = NUM_CLASSES
        num_fg -= len(gone)
    model.losses(anchors, logits, deltas, gt_classes, matched)
    return comm.all_gather_object((num_fg, float(model.foreground_ema)))


def test_foreground_ema_is_the_same_on_two_gloo_processes():
    from lazydet.engine.launch import launch

    (count_0, ema_0), (count_1, ema_1) = launch(_ema_on_this_rank, num_processes=2)
    assert count_0 != count_1  # the ranks saw different batches ...
    assert ema_0 == ema_1  # ... and still share one normaliser: the mean count's step
    assert ema_0 == pytest.approx(0.9 * 100 + 0.1 * (count_0 + count_1) / 2)


def test_training_steps_reduce_loss_and_inference_rescales_to_original_size():
    torch.manual_seed(0)
    model = RetinaNet(
        backbone=TinyBackbone(),
        head_in_features=list(STRIDES),
        anchor_generator=anchor_generator(),
        num_classes=NUM_CLASSES,
        # One conv per tower: four 0.01-std convs on 8 channels learn too slowly for a test.
        head=functools.partial(RetinaNetHead, num_convs=1),
        # The EMA normaliser grows the loss while it decays from 100 towards the batch's
        # foreground count, which would hide the decrease this test looks for.
        loss_normalizer="per_image",
    )
    g = torch.Generator().manual_seed(9)
    gt = gt_boxes_and_classes(6)
    batch = [
        {
            "image": torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8),
            "instances": Instances(size, gt_boxes=Boxes(b), gt_classes=c),
        }
        for size, (b, c) in zip(IMAGE_SIZES, gt)
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    history = []
    model.train()
    for _ in range(15):
        losses = model(batch)
        assert set(losses) == {"loss_cls", "loss_box_reg"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.5 * history[0], [round(h, 3) for h in history]

    model.eval()
    model.score_threshold = 0.0
    outputs = model([{"image": batch[0]["image"], "height": 128, "width": 120}])
    instances = outputs[0]["instances"]
    assert instances.image_size == (128, 120) and len(instances) > 0
    boxes = instances.pred_boxes.tensor
    assert boxes[:, 2].max() <= 120 and boxes[:, 3].max() <= 128
    # Scaled by 2 from the 64 x 60 input: some box must reach beyond the input's extent.
    assert boxes.max() > 64


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="missing"):
        RetinaNet(
            backbone=TinyBackbone(),
            head_in_features=["p3", "p7"],
            anchor_generator=anchor_generator(),
            num_classes=NUM_CLASSES,
        )
    with pytest.raises(ValueError, match="loss_normalizer"):
        RetinaNet(
            backbone=TinyBackbone(),
            head_in_features=list(STRIDES),
            anchor_generator=anchor_generator(),
            num_classes=NUM_CLASSES,
            loss_normalizer="mean",
        )
    wrong_head = RetinaNet(
        backbone=TinyBackbone(),
        head_in_features=list(STRIDES),
        anchor_generator=anchor_generator(),
        num_classes=NUM_CLASSES,
        head=RetinaNetHead(in_channels=CHANNELS, num_anchors=9, num_classes=NUM_CLASSES + 1),
    ).eval()
    with pytest.raises(ValueError, match="num_classes = 3"):
        wrong_head([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])


def test_foreground_ema_is_a_checkpointed_buffer_averaged_over_processes(monkeypatch):
    _, ours = build_pair(loss_normalizer="ema")
    anchors, logits, deltas, gt_classes, matched, num_fg = _labelled_batch(ours)
    # Two processes: this one counts num_fg, the other (simulated) 3 * num_fg; every process
    # then steps towards the mean, 2 * num_fg.
    reduced = []

    def all_reduce_mean(tensor):
        reduced.append(float(tensor))
        return tensor.mul_(2)

    monkeypatch.setattr("lazydet.modeling.meta_arch.retinanet.all_reduce_mean", all_reduce_mean)
    ours.losses(anchors, logits, deltas, gt_classes, matched)
    assert reduced == [num_fg]
    expected = 0.9 * 100 + 0.1 * 2 * num_fg
    assert float(ours.foreground_ema) == pytest.approx(expected)
    # A buffer: saved with the weights, restored on resume (a plain float was lost).
    state = ours.state_dict()
    assert float(state["foreground_ema"]) == pytest.approx(expected)
    _, resumed = build_pair(loss_normalizer="ema")
    assert float(resumed.foreground_ema) == 100.0
    resumed.load_state_dict(state)
    assert float(resumed.foreground_ema) == pytest.approx(expected)


def _resnet_fpn(**kwargs):
    from lazydet.modeling.backbone import FPN, ResNet

    stages = ["res3", "res4", "res5"]
    return FPN(
        bottom_up=ResNet(depth=18, out_features=stages),
        in_features=stages,
        out_channels=8,
        **kwargs,
    )


@pytest.mark.parametrize("in_feature", ["res5", "p5"])
def test_top_block_is_attached_to_the_backbone(in_feature):
    """P6/P7 from res5 (Detectron2) or p5 (torchvision), computed by the backbone's own top block
    and stored where Detectron2's checkpoints have it (``backbone.top_block``)."""
    from lazydet.modeling.backbone import LastLevelP6P7

    torch.manual_seed(0)
    channels = 512 if in_feature == "res5" else 8
    top_block = LastLevelP6P7(in_channels=channels, out_channels=8, in_feature=in_feature)
    generator = DefaultAnchorGenerator(sizes=[[32], [64], [128], [256], [512]])
    model = RetinaNet(
        backbone=_resnet_fpn(top_block=None),
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=generator,
        num_classes=NUM_CLASSES,
        top_block=top_block,
    ).eval()
    assert model.backbone.top_block is top_block
    keys = set(model.state_dict())
    assert {"backbone.top_block.p6.weight", "backbone.top_block.p7.bias"} <= keys
    assert not any(key.startswith("top_block.") for key in keys)
    assert model.strides == [8, 16, 32, 64, 128]
    # The same as an FPN built with that top block from the start.
    reference = _resnet_fpn(top_block=top_block).eval()
    reference.load_state_dict(model.backbone.state_dict())
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours, theirs = model.backbone(images), reference(images)
        source = reference.bottom_up(images)["res5"] if in_feature == "res5" else theirs["p5"]
        torch.testing.assert_close(ours["p6"], top_block.p6(source))
    assert set(ours) == {"p3", "p4", "p5", "p6", "p7"}
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name])


def test_top_block_needs_a_pyramid_backbone_and_an_existing_feature():
    from lazydet.modeling.backbone import LastLevelP6P7

    generator = DefaultAnchorGenerator(sizes=[[32], [64]])
    with pytest.raises(TypeError, match="needs a pyramid backbone"):
        RetinaNet(
            backbone=TinyBackbone(),
            head_in_features=list(STRIDES),
            anchor_generator=generator,
            num_classes=NUM_CLASSES,
            top_block=LastLevelP6P7(in_channels=8, out_channels=8, in_feature="p4"),
        )
    with pytest.raises(ValueError, match="in_feature='res6' is neither a pyramid output"):
        RetinaNet(
            backbone=_resnet_fpn(top_block=None),
            head_in_features=["p3", "p4"],
            anchor_generator=generator,
            num_classes=NUM_CLASSES,
            top_block=LastLevelP6P7(in_channels=512, out_channels=8, in_feature="res6"),
        )


def test_retinanet_fpn_takes_p6_p7_from_res5_as_detectron2():
    """``retinanet_fpn`` with Detectron2's "P6/P7 from res5": two overrides, no new backbone."""
    from lazydet.config import compose, instantiate

    cfg = compose(
        "retinanet_fpn",
        [
            "dataset=shapes",
            "model.backbone=resnet18",
            "model.top_block.in_feature=res5",
            "model.top_block.in_channels=512",
        ],
    )
    model = instantiate(cfg.model)
    # Detectron2's names and shapes: backbone.top_block.p6 reads res5's 512 channels.
    state = model.state_dict()
    assert state["backbone.top_block.p6.weight"].shape == (256, 512, 3, 3)
    assert state["backbone.top_block.p7.weight"].shape == (256, 256, 3, 3)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(images)
        res5 = model.backbone.bottom_up(images)["res5"]
    torch.testing.assert_close(features["p6"], model.backbone.top_block.p6(res5))
    assert [features[f"p{k}"].shape[-1] for k in range(3, 8)] == [8, 4, 2, 1, 1]
