"""Keypoint R-CNN R-50-FPN with torchvision's numerics, for torchvision's COCO weights.

The architecture of ``keypoint_rcnn_fpn`` with what torchvision's model does differently
(``_torchvision_numerics.py``): rounded, ratio-major anchors spaced by ``padded size //
feature size`` (torchvision's, not the stride on P6 of most images); torchvision's RPN
settings (smooth-L1 beta 1/9, loss averaged over the sampled anchors, 2000 training proposals,
boxes under 1e-3 px dropped); RoIAlign with sampling ratio 2 and ``aligned=False``; detections
under 1e-2 px dropped. Keypoint scores are torchvision's (heatmap logits). Loaded with
torchvision's ``keypointrcnn_resnet50_fpn_coco-*.pth``
(``train.init_checkpoint=...``), it returns torchvision's detections
(``tests/modeling/test_torchvision_equivalence.py``); lazydet's class ``c`` is torchvision's
label ``c + 1`` (lazydet has no background class 0).
"""

from ._torchvision_numerics import use_torchvision_numerics
from .keypoint_rcnn_fpn import *

use_torchvision_numerics(model)

# No starting weights by default (the torchvision:resnet50 of the base recipe does not suit this
# preset): give this preset's COCO weights, train.init_checkpoint=torchvision:keypointrcnn_resnet50_fpn
# (docs/weights.md), or a file; null trains from scratch.
train.init_checkpoint = None
