"""COCO 2017 instances (boxes and masks); files under $LAZYDET_DATASETS/coco."""

from ._coco import COCO_RESOLUTION

dataset = dict(
    train="coco_2017_train",
    test="coco_2017_val",
    num_classes=80,
    num_keypoints=0,
    **COCO_RESOLUTION,
)
