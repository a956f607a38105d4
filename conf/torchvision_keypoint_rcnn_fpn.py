"""Keypoint R-CNN R-50-FPN with torchvision's numerics, for torchvision's COCO weights.

``keypoint_rcnn_fpn`` with what torchvision's model does differently (listed in
``_torchvision_numerics.py``). Keypoint scores are torchvision's (heatmap logits). Start from torchvision's weights with
``train.init_checkpoint=torchvision:keypointrcnn_resnet50_fpn`` (no starting weights by default).
"""

from ._torchvision_numerics import use_torchvision_preset
from .keypoint_rcnn_fpn import *

use_torchvision_preset(model, train)
