"""Faster R-CNN on a p2..p6 backbone (Detectron2's COCO recipe)."""

from lazydet.config import MISSING, L
from lazydet.evaluation import COCOEvaluator
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.meta_arch import GeneralizedRCNN
from lazydet.modeling.proposal import RPN, StandardRPNHead
from lazydet.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, StandardROIHeads

from ._dataloader import detection_dataloader
from ._start import start_from_torchvision_imagenet
from ._train import train_node

defaults = {
    "model/backbone": "resnet50",
    "dataset": "coco2017",
    "optimizer": "sgd",
    "schedule": "1x",
}

# Heads are factories (_partial_=True): the model builds them with the backbone's output shape,
# so no channel count, stride or pooler scale is written here.
model = L(GeneralizedRCNN)(
    backbone=MISSING,
    proposal_generator=L(RPN)(
        in_features=["p2", "p3", "p4", "p5", "p6"],
        # One size per level, 8x the level's stride (32 at p2 up to 512 at p6), three ratios.
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[32], [64], [128], [256], [512]], aspect_ratios=[0.5, 1.0, 2.0]
        ),
        head=L(StandardRPNHead)(_partial_=True),
        pre_nms_topk_train=2000,
        pre_nms_topk_test=1000,
        post_nms_topk_train=1000,
        post_nms_topk_test=1000,
        _partial_=True,
    ),
    roi_heads=L(StandardROIHeads)(
        num_classes="${dataset.num_classes}",
        in_features=["p2", "p3", "p4", "p5"],
        box_head=L(FastRCNNConvFCHead)(fc_dims=[1024, 1024], _partial_=True),
        box_predictor=L(FastRCNNOutputLayers)(_partial_=True),
        batch_size_per_image=512,
        positive_fraction=0.25,
        _partial_=True,
    ),
)

dataloader = detection_dataloader()
train = train_node(eval_period=5000)

# Starts from torchvision's ImageNet ResNet-50 (train.init_checkpoint=torchvision:resnet50),
# with the input those weights need; conf/_start.py says what to give for other backbones.
start_from_torchvision_imagenet(model=model, train=train)

# COCO AP (bbox; segm and keypoints too when the model predicts them) on dataset.test, every
# train.eval_period iterations and at the end; python -m lazydet.evaluate uses it as well.
evaluator = L(COCOEvaluator)(dataset_name="${dataset.test}")
