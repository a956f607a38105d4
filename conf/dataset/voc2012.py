"""Pascal VOC 2012 trainval (20 classes, boxes only); files under $LAZYDET_DATASETS/VOC2012."""

dataset = dict(
    train="voc_2012_trainval",
    test="voc_2007_test",
    num_classes=20,
    num_keypoints=0,
    train_short_edge=[480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
    test_short_edge=800,
    max_size=1333,
    num_workers=4,
)
