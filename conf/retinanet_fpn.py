"""RetinaNet on a p2..p6 backbone with P6/P7 from P5 (Detectron2's COCO recipe)."""

from lazydet.config import MISSING, L
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone import LastLevelP6P7
from lazydet.modeling.meta_arch.retinanet import RetinaNet

from ._dataloader import detection_dataloader

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
train = dict(init_checkpoint=None, seed=0)
