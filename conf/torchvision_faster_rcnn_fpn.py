"""Faster R-CNN R-50-FPN with torchvision's numerics, for torchvision's COCO weights.

``faster_rcnn_fpn`` with what torchvision's model does differently (listed in
``_torchvision_numerics.py``). Start from torchvision's weights with
``train.init_checkpoint=torchvision:fasterrcnn_resnet50_fpn`` (no starting weights by default).
"""

from ._torchvision_numerics import use_torchvision_preset
from .faster_rcnn_fpn import *

use_torchvision_preset(model, train)
