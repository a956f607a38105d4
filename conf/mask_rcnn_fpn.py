"""Mask R-CNN on a p2..p6 backbone (Detectron2's COCO recipe)."""

from lazydet.config import L
from lazydet.modeling.roi_heads import MaskRCNNConvUpsampleHead

from ._dataloader import detection_dataloader
from .faster_rcnn_fpn import defaults, evaluator, model, train

model.roi_heads.mask_head = L(MaskRCNNConvUpsampleHead)(
    conv_dims=[256, 256, 256, 256], _partial_=True
)
dataloader = detection_dataloader(use_masks=True)
