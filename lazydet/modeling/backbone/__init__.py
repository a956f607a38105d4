"""Backbones: image batch -> named feature maps described by ``output_shape()``.

Multi-scale backbones used by the detectors (``FPN(bottom_up=ResNet(...))`` and
``SimpleFeaturePyramid(net=ViT(...))``) share one contract: ``p2..p6``, 256 channels,
strides 4..64, so RPN and ROI heads work with either.
"""

from lazydet.modeling.backbone.base import Backbone, ShapeSpec
from lazydet.modeling.backbone.fpn import (
    FPN,
    LastLevelMaxPool,
    LastLevelP6P7,
    convert_torchvision_fpn_state_dict,
)
from lazydet.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet
from lazydet.modeling.backbone.simple_feature_pyramid import SimpleFeaturePyramid
from lazydet.modeling.backbone.vit import ViT, vit_b, vit_h, vit_l

__all__ = [
    "FPN",
    "Backbone",
    "BasicBlock",
    "BottleneckBlock",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "ResNet",
    "ShapeSpec",
    "SimpleFeaturePyramid",
    "ViT",
    "convert_torchvision_fpn_state_dict",
    "vit_b",
    "vit_h",
    "vit_l",
]
