"""What the COCO 2017 options share: Detectron2's COCO training resolution (multi-scale short
edge, max 1333) and four loader workers a process."""

COCO_RESOLUTION = dict(
    train_short_edge=[640, 672, 704, 736, 768, 800],
    test_short_edge=800,
    max_size=1333,
    num_workers=4,
)
