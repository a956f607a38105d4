"""COCO 2017 person keypoints (17 keypoints); files under $LAZYDET_DATASETS/coco."""

from ._coco import COCO_RESOLUTION

dataset = dict(
    train="keypoints_coco_2017_train",
    test="keypoints_coco_2017_val",
    num_classes=1,
    num_keypoints=17,
    **COCO_RESOLUTION,
)
