"""Mask R-CNN on the bundled shapes set, sized to train on a laptop CPU in minutes (no download)."""

from lazydet.config import L
from lazydet.evaluation import COCOEvaluator
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone import FPN, LastLevelMaxPool, ResNet
from lazydet.modeling.meta_arch import GeneralizedRCNN
from lazydet.modeling.proposal import RPN, StandardRPNHead
from lazydet.modeling.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    MaskRCNNConvUpsampleHead,
    StandardROIHeads,
)
from lazydet.utils.comm import cpu_computes_bf16

from ._dataloader import detection_dataloader
from ._train import train_node

defaults = {"dataset": "shapes", "optimizer": "sgd", "schedule": "quickstart"}

# Measured (docs/benchmarks.md): 0.31 s per iteration on 2 idle CPU cores with AVX512-BF16, the
# whole run 6.5 minutes; bbox AP 0.57, segm AP 0.52 on shapes_val (float32: 0.48 s, 0.60 / 0.54).

# The shapes are 18-56 px wide in 128 px images, so three pyramid levels (strides 4, 8, 16) with
# anchors of 16, 32 and 64 px cover them; the backbone stops at res4 and FPN runs at 64 channels:
# every step of a CPU run goes to convolutions, and most of COCO's capacity would sit idle here.
model = L(GeneralizedRCNN)(
    backbone=L(FPN)(
        # No pretrained weights can be assumed, so nothing is frozen and BatchNorm trains.
        bottom_up=L(ResNet)(
            depth=18, out_features=["res2", "res3", "res4"], freeze_at=0, norm="BN"
        ),
        in_features=["res2", "res3", "res4"],
        out_channels=64,
        top_block=None,
    ),
    proposal_generator=L(RPN)(
        in_features=["p2", "p3", "p4"],
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[16], [32], [64]], aspect_ratios=[0.5, 1.0, 2.0]
        ),
        head=L(StandardRPNHead)(_partial_=True),
        batch_size_per_image=128,
        pre_nms_topk_train=400,
        pre_nms_topk_test=400,
        post_nms_topk_train=100,
        post_nms_topk_test=100,
        _partial_=True,
    ),
    roi_heads=L(StandardROIHeads)(
        num_classes="${dataset.num_classes}",
        in_features=["p2", "p3", "p4"],
        box_head=L(FastRCNNConvFCHead)(fc_dims=[256], _partial_=True),
        box_predictor=L(FastRCNNOutputLayers)(_partial_=True),
        mask_head=L(MaskRCNNConvUpsampleHead)(conv_dims=[64, 64], _partial_=True),
        batch_size_per_image=64,
        positive_fraction=0.25,
        # A 56 px box (the largest shape) pools from p4, 28 px from p3, 14 px from p2.
        canonical_box_size=56,
        canonical_level=4,
        _partial_=True,
    ),
)

dataloader = detection_dataloader(use_masks=True, total_batch_size=8)
# Native resolution: no multi-scale, the shapes are already small.
dataloader["train"].mapper.augmentations.short_edge_length = 128
dataloader["train"].num_workers = 1
dataloader["test"].mapper.augmentations.short_edge_length = 128
dataloader["test"].num_workers = 1

# A CPU run of minutes: save every 100 iterations so a Ctrl-C or a kill loses little.
# Channels-last weights (the same values, cheaper convolutions) and, on a CPU with bf16 in
# hardware, bf16 autocast: together about half the float32 step (docs/benchmarks.md). Where bf16
# is emulated it is slower than float32, so the quick start stays float32 there.
train = train_node(
    checkpoint_period=100, channels_last=True, amp="bf16" if cpu_computes_bf16() else None
)

# Evaluated on shapes_val after the last iteration (train.eval_period=N: every N iterations too).
evaluator = L(COCOEvaluator)(dataset_name="${dataset.test}")
