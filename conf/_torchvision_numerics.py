"""What torchvision's ``*_resnet50_fpn`` R-CNNs do differently from Detectron2's recipe.

Shared by the ``torchvision_*_rcnn_fpn`` presets; each option is named in the modules it belongs
to (``TORCHVISION_RPN_OPTIONS`` etc.), so this only applies them to an R-CNN model config.
"""

from lazydet.modeling.proposal import TORCHVISION_RPN_OPTIONS
from lazydet.modeling.roi_heads import (
    TORCHVISION_FAST_RCNN_OPTIONS,
    TORCHVISION_MASK_HEAD_OPTIONS,
    TORCHVISION_ROI_HEADS_OPTIONS,
)


def use_torchvision_numerics(model) -> None:
    """Set torchvision's anchors, RPN, pooling, box and mask options on ``model``, in place."""
    rpn = model.proposal_generator
    # torchvision rounds its cell anchors to whole pixels and orders them ratio-major.
    rpn.anchor_generator.round_base_anchors = True
    rpn.anchor_generator.cell_anchor_order = "ratio_major"
    for key, value in TORCHVISION_RPN_OPTIONS.items():
        rpn[key] = value
    for key, value in TORCHVISION_ROI_HEADS_OPTIONS.items():
        model.roi_heads[key] = value
    for key, value in TORCHVISION_FAST_RCNN_OPTIONS.items():
        model.roi_heads.box_predictor[key] = value
    if model.roi_heads.get("mask_head") is not None:
        for key, value in TORCHVISION_MASK_HEAD_OPTIONS.items():
            model.roi_heads.mask_head[key] = value
