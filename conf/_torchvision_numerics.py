"""What torchvision's ``*_resnet50_fpn`` R-CNNs do differently from Detectron2's recipe.

The one home of these options (the modules keep Detectron2's defaults and name each option;
this file says which values are torchvision's). Shared by the ``torchvision_*_rcnn_fpn``
presets (``use_torchvision_preset``); ``torchvision_retinanet_fpn`` uses
``use_torchvision_anchors``.

A preset is its base recipe's architecture with torchvision's numerics: rounded, ratio-major
anchors spaced by ``padded size // feature size`` (torchvision's, not the stride on P6 of most
images); torchvision's RPN settings (smooth-L1 beta 1/9, loss averaged over the sampled anchors,
2000 training proposals, boxes under 1e-3 px dropped); RoIAlign with sampling ratio 2 and
``aligned=False``; detections under 1e-2 px dropped. Loaded with torchvision's COCO weights
(``train.init_checkpoint=torchvision:<name>``, docs/weights.md), it returns torchvision's
detections (``tests/modeling/test_torchvision_equivalence.py``); lazydet's class ``c`` is
torchvision's label ``c + 1`` (lazydet has no background class 0).
"""

from types import MappingProxyType

# RPN as torchvision's RegionProposalNetwork in its Faster R-CNN: smooth-L1 with beta 1/9, both
# losses averaged over the sampled anchors, boxes narrower than 1e-3 px dropped, 2000 proposals
# kept per image in training, NMS within each level.
TORCHVISION_RPN_OPTIONS = MappingProxyType(
    {
        "smooth_l1_beta": 1.0 / 9,
        "loss_normalizer": "num_sampled",
        "min_box_size": 1e-3,
        "pre_nms_topk_train": 2000,
        "pre_nms_topk_test": 1000,
        "post_nms_topk_train": 2000,
        "post_nms_topk_test": 1000,
        "nms_threshold": 0.7,
        "nms_per_level": True,
    }
)

# StandardROIHeads sampling and pooling as torchvision's RoIHeads with
# MultiScaleRoIAlign(sampling_ratio=2), which uses aligned=False. The level mapping constants
# (224, level 4) are the same in both.
TORCHVISION_ROI_HEADS_OPTIONS = MappingProxyType(
    {"pooler_sampling_ratio": 2, "pooler_aligned": False}
)

# FastRCNNOutputLayers as torchvision's RoIHeads losses and postprocess_detections: smooth-L1
# with beta 1/9 and boxes narrower than 1e-2 px dropped at inference (score threshold 0.05,
# NMS 0.5, 100 detections and weights (10, 10, 5, 5) are already the defaults of both).
TORCHVISION_FAST_RCNN_OPTIONS = MappingProxyType({"smooth_l1_beta": 1.0 / 9, "min_box_size": 1e-2})

# torchvision's Mask R-CNN crops its mask targets with RoIAlign aligned=False and trains on the
# soft (unthresholded) crops; Detectron2 uses aligned=True and thresholds them at 0.5.
TORCHVISION_MASK_HEAD_OPTIONS = MappingProxyType(
    {"target_aligned": False, "binarize_targets": False}
)


def use_torchvision_anchors(anchor_generator) -> None:
    """torchvision's anchors on a ``DefaultAnchorGenerator`` config, in place: cell anchors
    rounded to whole pixels, ordered ratio-major, and spaced by ``padded size // feature size``
    (not the level's stride) so that images whose padded size is not a multiple of the coarsest
    stride (most images at torchvision's default 800-pixel short side) get torchvision's
    anchors."""
    anchor_generator.round_base_anchors = True
    anchor_generator.cell_anchor_order = "ratio_major"
    anchor_generator.spacing = "padded_size"


def use_torchvision_numerics(model) -> None:
    """Set torchvision's anchors, RPN, pooling, box and mask options on ``model``, in place."""
    rpn = model.proposal_generator
    use_torchvision_anchors(rpn.anchor_generator)
    for key, value in TORCHVISION_RPN_OPTIONS.items():
        rpn[key] = value
    for key, value in TORCHVISION_ROI_HEADS_OPTIONS.items():
        model.roi_heads[key] = value
    for key, value in TORCHVISION_FAST_RCNN_OPTIONS.items():
        model.roi_heads.box_predictor[key] = value
    if model.roi_heads.get("mask_head") is not None:
        for key, value in TORCHVISION_MASK_HEAD_OPTIONS.items():
            model.roi_heads.mask_head[key] = value


def use_torchvision_preset(model, train) -> None:
    """``use_torchvision_numerics(model)``, and no starting weights by default.

    The base recipe's ``torchvision:resnet50`` ImageNet start does not suit a preset made for
    torchvision's COCO weights: give those (``train.init_checkpoint=torchvision:<name>``), or a
    file; null trains from scratch.
    """
    use_torchvision_numerics(model)
    train.init_checkpoint = None
