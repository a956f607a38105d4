"""The bundled synthetic shapes (circle, square, triangle; masks and 4 keypoints), made on first use."""

dataset = dict(
    train="shapes_train",
    test="shapes_val",
    num_classes=3,
    num_keypoints=4,
    # 128x128 images: keep them near their size so a CPU run learns in minutes.
    train_short_edge=[112, 128, 144],
    test_short_edge=128,
    max_size=256,
    num_workers=2,  # small images decode fast; more workers only cost memory
)
