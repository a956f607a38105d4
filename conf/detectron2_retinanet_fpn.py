"""RetinaNet R-50-FPN with Detectron2's numerics, for Detectron2's model-zoo ``.pkl`` weights.

Detectron2's layout: P3-P5 from an FPN on ``res3..res5`` of the MSRA ResNet-50 and P6/P7 from
``res5`` (``LastLevelP6P7(in_channels=2048, in_feature="res5")``, at ``backbone.top_block``
where the ``.pkl`` has it), so ``retinanet_R_50_FPN_*/model_final_*.pkl`` loads completely. Its
anchors (unrounded, size-major, spaced by the stride) are ``retinanet_fpn``'s; its inference
runs the per-class NMS on unclipped boxes and clips the kept ones (``clip_before_nms=False``).
The backbone is written here, so this experiment has no ``model/backbone`` choice.
"""

from lazydet.config import L
from lazydet.modeling.backbone import LastLevelP6P7

from ._detectron2_numerics import detectron2_resnet50_fpn, use_detectron2_inputs
from .retinanet_fpn import *

defaults = {group: option for group, option in defaults.items() if group != "model/backbone"}
model.backbone = detectron2_resnet50_fpn(
    in_features=("res3", "res4", "res5"),
    top_block=L(LastLevelP6P7)(in_channels=2048, out_channels=256, in_feature="res5"),
)
model.top_block = None
use_detectron2_inputs(model)
model.clip_before_nms = False

# No starting weights by default (the torchvision:resnet50 of the base recipe does not suit this
# preset): give this preset's COCO weights, train.init_checkpoint=detectron2:COCO-Detection/retinanet_R_50_FPN_3x
# (docs/weights.md), or a file; null trains from scratch.
train.init_checkpoint = None
