"""ROI heads: the second stage of the R-CNN family (box, mask and keypoint branches)."""

from lazydet.modeling.roi_heads.box_head import FastRCNNConvFCHead
from lazydet.modeling.roi_heads.fast_rcnn import (
    FAST_RCNN_BOX_WEIGHTS,
    FastRCNNOutputLayers,
    fast_rcnn_inference,
)
from lazydet.modeling.roi_heads.keypoint_head import (
    KRCNNConvDeconvUpsampleHead,
    heatmaps_to_keypoints,
    keypoint_rcnn_inference,
    keypoint_rcnn_loss,
)
from lazydet.modeling.roi_heads.mask_head import (
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
    mask_rcnn_targets,
)
from lazydet.modeling.roi_heads.roi_heads import (
    ROIPooler,
    StandardROIHeads,
    select_foreground_proposals,
)

__all__ = [
    "FAST_RCNN_BOX_WEIGHTS",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "KRCNNConvDeconvUpsampleHead",
    "MaskRCNNConvUpsampleHead",
    "ROIPooler",
    "StandardROIHeads",
    "fast_rcnn_inference",
    "heatmaps_to_keypoints",
    "keypoint_rcnn_inference",
    "keypoint_rcnn_loss",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
    "mask_rcnn_targets",
    "select_foreground_proposals",
]
