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
from ._start import start_from_torchvision_imagenet
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

# Starts from torchvision's ImageNet ResNet-50 (train.init_checkpoint=torchvision:resnet50),
# with the input those weights need; conf/_start.py says what to give for other backbones.
start_from_torchvision_imagenet(model=model, train=train)

# COCO AP (bbox; segm and keypoints too when the model predicts them) on dataset.test, every
# train.eval_period iterations and at the end; python -m lazydet.evaluate uses it as well.
evaluator = L(COCOEvaluator)(dataset_name="${dataset.test}")
