"""RetinaNet (Detectron2's COCO recipe) on any p2..p6 backbone option, P6/P7 from P5.

``model.top_block`` is given to the backbone (``backbone.top_block``), replacing its ``p6``:
from ``p5`` as torchvision's RetinaNet, which every backbone option has. Detectron2's RetinaNet
computes P6/P7 from ``res5`` instead: ``model.top_block.in_feature=res5
model.top_block.in_channels=2048`` on a ResNet-50 (``detectron2_retinanet_fpn`` writes that
layout out in full, for Detectron2's checkpoints).
"""

from lazydet.config import MISSING, L
from lazydet.evaluation import COCOEvaluator
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone import LastLevelP6P7
from lazydet.modeling.meta_arch.retinanet import RetinaNet

from ._dataloader import detection_dataloader
from ._train import train_node

defaults = {
    "model/backbone": "resnet50",
    "dataset": "coco2017",
    "optimizer": "sgd",
    "schedule": "1x",
}

model = L(RetinaNet)(
    backbone=MISSING,
    top_block=L(LastLevelP6P7)(in_channels=256, out_channels=256, in_feature="p5"),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    # Three octave scales per level, anchor side 4x the level's stride.
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in (32, 64, 128, 256, 512)],
        aspect_ratios=[0.5, 1.0, 2.0],
    ),
    num_classes="${dataset.num_classes}",
)

dataloader = detection_dataloader()
train = train_node(eval_period=5000)

# Starts from torchvision's ImageNet ResNet-50 (train.init_checkpoint=torchvision:resnet50, as
# Detectron2 and MMDetection start from ImageNet): those weights need RGB input, torchvision's
# ImageNet statistics on 0-255 pixels and the stride in the 3x3 conv (stride_in_1x1=False, the
# backbone options' setting), written out here. Stem and res2 stay frozen (freeze_at=2, FrozenBN).
# For model.backbone=resnet18/resnet101 give train.init_checkpoint=torchvision:resnet18/101; the
# ViT options have no ImageNet file lazydet converts: train.init_checkpoint=null trains from
# scratch (nothing frozen, the norms train). docs/weights.md lists the names.
train.init_checkpoint = "torchvision:resnet50"
model.input_format = "RGB"
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]

# COCO AP (bbox; segm and keypoints too when the model predicts them) on dataset.test, every
# train.eval_period iterations and at the end; python -m lazydet.evaluate uses it as well.
evaluator = L(COCOEvaluator)(dataset_name="${dataset.test}")
