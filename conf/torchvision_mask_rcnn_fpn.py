"""Mask R-CNN R-50-FPN with torchvision's numerics: loads ``maskrcnn_resnet50_fpn`` weights exactly.

The architecture of ``mask_rcnn_fpn``, with what torchvision's model does differently:
rounded ratio-major anchors, its RPN settings (smooth-L1 beta 1/9, per-sampled-anchor loss
normaliser, 2000 training proposals, 1e-3 px minimum), RoIAlign with sampling ratio 2 and
``aligned=False``, and 1e-2 px minimum detection size (see ``_torchvision_numerics.py``). With
``train.init_checkpoint`` pointing at torchvision's ``maskrcnn_resnet50_fpn_coco-*.pth`` it
returns torchvision's detections (``tests/modeling/test_torchvision_equivalence.py``); its
labels are torchvision's minus one (lazydet has no background class 0).
"""

from ._torchvision_numerics import use_torchvision_numerics
from .mask_rcnn_fpn import *

use_torchvision_numerics(model)
