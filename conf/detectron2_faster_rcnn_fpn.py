"""Faster R-CNN R-50-FPN with Detectron2's numerics, for Detectron2's model-zoo ``.pkl`` weights.

``faster_rcnn_fpn`` (Detectron2's recipe) on Detectron2's MSRA ResNet-50 (stride in the 1x1
conv, ``pixel_std = 1``; ``_detectron2_numerics.py``). The backbone is written here, so this
experiment has no ``model/backbone`` choice. Loaded with
``faster_rcnn_R_50_FPN_*/model_final_*.pkl`` (``train.init_checkpoint=...``; the stem is turned
to read RGB on load), it computes Detectron2's detections.
"""

from ._detectron2_numerics import detectron2_resnet50_fpn, use_detectron2_inputs
from .faster_rcnn_fpn import *

defaults = {group: option for group, option in defaults.items() if group != "model/backbone"}
model.backbone = detectron2_resnet50_fpn()
use_detectron2_inputs(model)

# No starting weights by default (the torchvision:resnet50 of the base recipe does not suit this
# preset): give this preset's COCO weights, train.init_checkpoint=detectron2:COCO-Detection/faster_rcnn_R_50_FPN_3x
# (docs/weights.md), or a file; null trains from scratch.
train.init_checkpoint = None
