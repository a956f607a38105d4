"""COCO 2017 instances (boxes and masks); files under $LAZYDET_DATASETS/coco."""

dataset = dict(
    train="coco_2017_train",
    test="coco_2017_val",
    num_classes=80,
    num_keypoints=0,
    # Training resolution of Detectron2's COCO recipes (multi-scale short edge, max 1333).
    train_short_edge=[640, 672, 704, 736, 768, 800],
    test_short_edge=800,
    max_size=1333,
    num_workers=4,
)
