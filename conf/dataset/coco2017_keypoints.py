"""COCO 2017 person keypoints (17 keypoints); files under $LAZYDET_DATASETS/coco."""

dataset = dict(
    train="keypoints_coco_2017_train",
    test="keypoints_coco_2017_val",
    num_classes=1,
    num_keypoints=17,
    train_short_edge=[640, 672, 704, 736, 768, 800],
    test_short_edge=800,
    max_size=1333,
    num_workers=4,
)
