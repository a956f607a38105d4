"""Backbones: image batch -> named feature maps described by ``output_shape()``.

Multi-scale backbones used by the detectors (``FPN(bottom_up=ResNet(...))`` and
``SimpleFeaturePyramid(net=ViT(...))``) share one contract: ``p2..p6``, 256 channels,
strides 4..64, so RPN and ROI heads work with either. Their shapes are ``lazydet.layers.ShapeSpec``;
the ViTDet and torchvision presets are configs (``conf/``), not functions here.
"""

from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.backbone.fpn import FPN, convert_torchvision_fpn_state_dict
from lazydet.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet
from lazydet.modeling.backbone.simple_feature_pyramid import SimpleFeaturePyramid
from lazydet.modeling.backbone.top_block import LastLevelMaxPool, LastLevelP6P7, PyramidBackbone
from lazydet.modeling.backbone.vit import ViT

__all__ = [
    "FPN",
    "Backbone",
    "BasicBlock",
    "BottleneckBlock",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "PyramidBackbone",
    "ResNet",
    "SimpleFeaturePyramid",
    "ViT",
    "convert_torchvision_fpn_state_dict",
]
