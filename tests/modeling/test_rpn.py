"""RPN against torchvision's RegionProposalNetwork (proposals, losses, gradients) and training."""

from __future__ import annotations

import functools
import runpy
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList as TorchvisionImageList
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.ops import box_iou

from lazydet.config.tree import builtin_config_root
from lazydet.layers import ShapeSpec
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.proposal import RPN, StandardRPNHead
from lazydet.structures import Boxes, ImageList, Instances

# torchvision's options live in the presets (conf/_torchvision_numerics.py), their one home.
_TORCHVISION = runpy.run_path(str(builtin_config_root() / "_torchvision_numerics.py"))
TORCHVISION_RPN_OPTIONS = _TORCHVISION["TORCHVISION_RPN_OPTIONS"]


CHANNELS = 8
STRIDES = {"p2": 4, "p3": 8, "p4": 16}
SIZES = ((16,), (32,), (64,))
PADDED = 64
IMAGE_SIZES = [(64, 60), (50, 64)]
INPUT_SHAPE = {name: ShapeSpec(channels=CHANNELS, stride=s) for name, s in STRIDES.items()}


def make_features(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (name, torch.randn(2, CHANNELS, PADDED // s, PADDED // s, generator=g))
        for name, s in STRIDES.items()
    )


def make_gt_boxes(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for n, (h, w) in zip((3, 2), IMAGE_SIZES):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(n, 2, generator=g) * 30 + 6
        boxes.append(torch.cat((xy, torch.minimum(xy + wh, torch.tensor([w, h]))), dim=1))
    return boxes


def build_pair(**overrides) -> tuple[RegionProposalNetwork, RPN]:
    """torchvision's RPN with random (not tiny) weights, and lazydet's with the same weights."""
    options = {
        **TORCHVISION_RPN_OPTIONS,
        "pre_nms_topk_train": 60,
        "pre_nms_topk_test": 40,
        "post_nms_topk_train": 50,
        "post_nms_topk_test": 25,
        **overrides,
    }
    torch.manual_seed(0)
    theirs = RegionProposalNetwork(
        AnchorGenerator(sizes=SIZES, aspect_ratios=((0.5, 1.0, 2.0),) * 3),
        RPNHead(CHANNELS, 3),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=options.pop("batch_size_per_image", 256),
        positive_fraction=0.5,
        pre_nms_top_n={
            "training": options["pre_nms_topk_train"],
            "testing": options["pre_nms_topk_test"],
        },
        post_nms_top_n={
            "training": options["post_nms_topk_train"],
            "testing": options["post_nms_topk_test"],
        },
        nms_thresh=options["nms_threshold"],
    )
    for p in theirs.head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours = RPN(
        input_shape=INPUT_SHAPE,
        in_features=list(STRIDES),
        anchor_generator=DefaultAnchorGenerator(
            sizes=SIZES, aspect_ratios=(0.5, 1.0, 2.0), round_base_anchors=True
        ),
        batch_size_per_image=theirs.fg_bg_sampler.batch_size_per_image,
        positive_fraction=0.5,
        **options,
    )
    ours.head.convs[0].load_state_dict(theirs.head.conv[0][0].state_dict())
    ours.head.objectness_logits.load_state_dict(theirs.head.cls_logits.state_dict())
    ours.head.anchor_deltas.load_state_dict(theirs.head.bbox_pred.state_dict())
    return theirs, ours


def images() -> tuple[TorchvisionImageList, ImageList]:
    tensor = torch.zeros(2, 3, PADDED, PADDED)
    return TorchvisionImageList(tensor, IMAGE_SIZES), ImageList(tensor, IMAGE_SIZES)


def torchvision_scores(rpn: RegionProposalNetwork, tv_images, features) -> list[torch.Tensor]:
    """The scores torchvision's RPN gives its proposals (its forward returns only the boxes)."""
    level_features = list(features.values())
    objectness, deltas = rpn.head(level_features)
    anchors = rpn.anchor_generator(tv_images, level_features)
    num_per_level = [o[0].numel() for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    decoded = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
    return rpn.filter_proposals(decoded, objectness, tv_images.image_sizes, num_per_level)[1]


def test_inference_proposals_match_torchvision():
    theirs, ours = build_pair()
    theirs.eval(), ours.eval()
    tv_images, our_images = images()
    features = make_features()
    with torch.no_grad():
        tv_boxes, _ = theirs(tv_images, features)
        tv_scores = torchvision_scores(theirs, tv_images, features)
    proposals, losses = ours(our_images, features)
    assert losses == {}
    for image, (boxes, scores) in enumerate(zip(tv_boxes, tv_scores)):
        assert len(proposals[image]) == len(boxes) > 5
        assert proposals[image].image_size == IMAGE_SIZES[image]
        torch.testing.assert_close(proposals[image].proposal_boxes.tensor, boxes, atol=1e-4, rtol=0)
        torch.testing.assert_close(proposals[image].objectness_logits.sigmoid(), scores)


@pytest.mark.parametrize("batch_size_per_image", [10_000, 64])
def test_training_losses_gradients_and_proposals_match_torchvision(batch_size_per_image):
    # 10_000 > number of anchors: every labelled anchor is sampled, no randomness involved.
    # 64: random sampling, made equal by seeding before each (both draw positives then negatives
    # per image with randperm).
    theirs, ours = build_pair(batch_size_per_image=batch_size_per_image)
    theirs.train(), ours.train()
    tv_images, our_images = images()
    features = make_features(1)
    gt = make_gt_boxes(2)
    gt[1] = gt[1][:0]  # a background-only image

    torch.manual_seed(7)
    tv_boxes, tv_losses = theirs(tv_images, features, [{"boxes": b} for b in gt])
    torch.manual_seed(7)
    proposals, losses = ours(
        our_images, features, [Instances(s, gt_boxes=Boxes(b)) for s, b in zip(IMAGE_SIZES, gt)]
    )
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    torch.testing.assert_close(losses["loss_rpn_cls"], tv_losses["loss_objectness"])
    torch.testing.assert_close(losses["loss_rpn_loc"], tv_losses["loss_rpn_box_reg"])
    assert losses["loss_rpn_loc"] > 0

    sum(tv_losses.values()).backward()
    sum(losses.values()).backward()
    torch.testing.assert_close(
        ours.head.anchor_deltas.weight.grad, theirs.head.bbox_pred.weight.grad
    )
    torch.testing.assert_close(ours.head.convs[0].weight.grad, theirs.head.conv[0][0].weight.grad)
    for image, boxes in enumerate(tv_boxes):
        torch.testing.assert_close(proposals[image].proposal_boxes.tensor, boxes, atol=1e-4, rtol=0)
        assert not proposals[image].objectness_logits.requires_grad


def test_nms_across_levels_leaves_no_overlap_between_levels():
    _, ours = build_pair(nms_per_level=False, post_nms_topk_test=1000)
    ours.eval()
    proposals, _ = ours(images()[1], make_features(3))
    for instances in proposals:
        iou = box_iou(instances.proposal_boxes.tensor, instances.proposal_boxes.tensor)
        iou.fill_diagonal_(0)
        assert iou.max() <= 0.7
        assert torch.all(instances.objectness_logits[:-1] >= instances.objectness_logits[1:])
    _, per_level = build_pair(post_nms_topk_test=1000)
    per_level.eval()
    proposals_per_level, _ = per_level(images()[1], make_features(3))
    # NMS within levels only keeps overlapping boxes from different levels: strictly more.
    assert len(proposals_per_level[0]) > len(proposals[0])


def test_batch_level_post_nms_topk_keeps_the_best_of_the_batch():
    # Reference: every NMS survivor of each image (no per-image cut), then the 30 best logits of
    # the whole batch picked by hand.
    _, unlimited = build_pair(post_nms_topk_train=10_000)
    _, batch_level = build_pair(post_nms_topk_train=30, batch_post_nms_topk_train=True)
    features = make_features(11)
    gt = [Instances(s, gt_boxes=Boxes(b)) for s, b in zip(IMAGE_SIZES, make_gt_boxes(12))]
    everything, _ = unlimited.train()(images()[1], features, gt)
    selected, _ = batch_level.train()(images()[1], features, gt)
    threshold = torch.cat([p.objectness_logits for p in everything]).topk(30).values[-1]
    assert sum(len(p) for p in selected) == 30
    assert len(selected[0]) != 30 and len(selected[1]) != 30  # both images contribute
    for ours, reference in zip(selected, everything):
        expected = reference[reference.objectness_logits >= threshold]
        torch.testing.assert_close(ours.proposal_boxes.tensor, expected.proposal_boxes.tensor)
        torch.testing.assert_close(ours.objectness_logits, expected.objectness_logits)
    batch_level.eval()
    assert all(len(p) == 25 for p in batch_level(images()[1], features)[0])  # test: per image


def test_detectron2_loss_normalisation_by_hand():
    # One image, one gt box equal to an anchor: with batch_size normalisation the summed losses
    # are divided by batch_size_per_image * num_images, whatever is sampled.
    _, ours = build_pair(loss_normalizer="batch_size", batch_size_per_image=10_000)
    _, reference = build_pair(loss_normalizer="num_sampled", batch_size_per_image=10_000)
    ours.train(), reference.train()
    features = make_features(4)
    gt = [Instances(s, gt_boxes=Boxes(b)) for s, b in zip(IMAGE_SIZES, make_gt_boxes(5))]
    losses = ours(images()[1], features, gt)[1]
    per_sampled = reference(images()[1], features, gt)[1]
    anchors = ours.anchor_generator(list(features.values()), ours.strides)
    labels, _ = ours.label_and_sample_anchors(anchors, gt)
    num_sampled = int((labels >= 0).sum())
    for name in losses:
        torch.testing.assert_close(losses[name] * (10_000 * 2), per_sampled[name] * num_sampled)


def test_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    rpn = RPN(
        input_shape=INPUT_SHAPE,
        in_features=list(STRIDES),
        anchor_generator=DefaultAnchorGenerator(sizes=SIZES, aspect_ratios=(0.5, 1.0, 2.0)),
        batch_size_per_image=10_000,
    ).train()
    features = make_features(6)
    gt = [Instances(s, gt_boxes=Boxes(b)) for s, b in zip(IMAGE_SIZES, make_gt_boxes(8))]
    optimizer = torch.optim.SGD(rpn.parameters(), lr=1.0, momentum=0.9)
    history = []
    for _ in range(15):
        losses = rpn(images()[1], features, gt)[1]
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.5 * history[0], history


def test_head_factory_and_module_are_both_accepted():
    generator = DefaultAnchorGenerator(sizes=SIZES, aspect_ratios=(0.5, 1.0, 2.0))
    rpn = RPN(
        input_shape=INPUT_SHAPE,
        in_features=list(STRIDES),
        anchor_generator=generator,
        head=functools.partial(StandardRPNHead, num_convs=2, conv_channels=4),
    )
    assert rpn.head.objectness_logits.in_channels == 4 and len(rpn.head.convs) == 4
    assert rpn.head.objectness_logits.out_channels == 3
    wrong = RPN(
        input_shape=INPUT_SHAPE,
        in_features=list(STRIDES),
        anchor_generator=generator,
        head=StandardRPNHead(in_channels=CHANNELS, num_anchors=2),
    ).eval()
    with pytest.raises(ValueError, match="num_anchors must equal"):
        wrong(images()[1], make_features())


def test_bad_configuration_raises():
    generator = DefaultAnchorGenerator(sizes=SIZES)
    with pytest.raises(ValueError, match=r"missing \['p7'\]"):
        RPN(input_shape=INPUT_SHAPE, in_features=["p2", "p7"], anchor_generator=generator)
    shapes = {**INPUT_SHAPE, "p4": ShapeSpec(channels=16, stride=16)}
    with pytest.raises(ValueError, match="same channel"):
        RPN(input_shape=shapes, in_features=list(STRIDES), anchor_generator=generator)
    with pytest.raises(ValueError, match="2 levels"):
        RPN(
            input_shape=INPUT_SHAPE,
            in_features=list(STRIDES),
            anchor_generator=DefaultAnchorGenerator(sizes=[[16], [32]]),
        )
    rpn = RPN(input_shape=INPUT_SHAPE, in_features=list(STRIDES), anchor_generator=generator)
    with pytest.raises(ValueError, match="gt_instances"):
        rpn.train()(images()[1], make_features())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_proposals_match_cpu():
    # On CUDA the NMS runs lazydet's Triton kernel; the proposals must not depend on the device.
    _, rpn = build_pair()
    rpn.eval()
    features = make_features(10)
    cpu, _ = rpn(images()[1], features)
    gpu, _ = rpn.cuda()(images()[1].to("cuda"), {k: v.cuda() for k, v in features.items()})
    for on_cpu, on_gpu in zip(cpu, gpu):
        assert len(on_cpu) == len(on_gpu)
        torch.testing.assert_close(
            on_gpu.proposal_boxes.tensor.cpu(), on_cpu.proposal_boxes.tensor, atol=1e-3, rtol=0
        )
