"""Keypoint R-CNN on a p2..p6 backbone (Detectron2's COCO person-keypoint recipe)."""

from lazydet.config import L
from lazydet.modeling.roi_heads import KRCNNConvDeconvUpsampleHead

from ._dataloader import detection_dataloader
from .faster_rcnn_fpn import defaults, evaluator, model, train

defaults = {**defaults, "dataset": "coco2017_keypoints"}
model.roi_heads.keypoint_head = L(KRCNNConvDeconvUpsampleHead)(
    num_keypoints="${dataset.num_keypoints}", conv_dims=[512] * 8, _partial_=True
)
dataloader = detection_dataloader(use_keypoints=True)
