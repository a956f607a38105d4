"""Mask R-CNN R-50-FPN with Detectron2's numerics, for Detectron2's model-zoo ``.pkl`` weights.

``mask_rcnn_fpn`` on Detectron2's MSRA ResNet-50 (``_detectron2_numerics.py``), with masks
pasted as Detectron2 does (``grid_sample`` at pixel centres; ``mask_paste="detectron2"``). Loaded
with ``mask_rcnn_R_50_FPN_*/model_final_*.pkl``, it computes Detectron2's detections and masks.
"""

from ._detectron2_numerics import detectron2_resnet50_fpn, use_detectron2_inputs
from .mask_rcnn_fpn import *

defaults = {group: option for group, option in defaults.items() if group != "model/backbone"}
model.backbone = detectron2_resnet50_fpn()
use_detectron2_inputs(model)
model.mask_paste = "detectron2"

# No starting weights by default (the torchvision:resnet50 of the base recipe does not suit this
# preset): give this preset's COCO weights, train.init_checkpoint=detectron2:COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x
# (docs/weights.md), or a file; null trains from scratch.
train.init_checkpoint = None
