"""Keypoint R-CNN R-50-FPN with Detectron2's numerics, for Detectron2's model-zoo ``.pkl`` weights.

``keypoint_rcnn_fpn`` on Detectron2's MSRA ResNet-50 (``_detectron2_numerics.py``), with keypoint
scores as Detectron2 reports them: the softmax probability of the heatmap's peak
(``score_type="probability"``), not torchvision's logit. Loaded with
``keypoint_rcnn_R_50_FPN_*/model_final_*.pkl``, it computes Detectron2's detections and keypoints.
"""

from ._detectron2_numerics import detectron2_resnet50_fpn, use_detectron2_inputs
from .keypoint_rcnn_fpn import *

defaults = {group: option for group, option in defaults.items() if group != "model/backbone"}
model.backbone = detectron2_resnet50_fpn()
use_detectron2_inputs(model)
model.roi_heads.keypoint_head.score_type = "probability"

# No starting weights by default (the torchvision:resnet50 of the base recipe does not suit this
# preset): give this preset's COCO weights, train.init_checkpoint=detectron2:COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x
# (docs/weights.md), or a file; null trains from scratch.
train.init_checkpoint = None
