"""A COCO json of your own: ``dataset=coco_json dataset.train_json=... dataset.train_images=...
dataset.test_json=... dataset.test_images=...`` (docs/data.md).

Class names, ``num_classes`` and the keypoint metadata (names, left/right flip pairs, skeleton)
come from the json's ``categories`` (lazydet/data/datasets/coco_json.py): the heads are sized by
the training json, and the run's checkpoints carry its class names.
"""

import lazydet.data
from lazydet.config import MISSING

dataset = dict(
    train_json=MISSING,
    train_images=MISSING,
    test_json=MISSING,
    test_images=MISSING,
    # The dataset names: each json's absolute path, registered with its metadata on resolution.
    train="${coco_json.dataset:train,${dataset.train_json},${dataset.train_images}}",
    test="${coco_json.dataset:test,${dataset.test_json},${dataset.test_images}}",
    num_classes="${coco_json.num_classes:${dataset.train_json}}",
    num_keypoints="${coco_json.num_keypoints:${dataset.train_json}}",
    # Detectron2's COCO resolution; lower them for small images (e.g. dataset.test_short_edge=512).
    train_short_edge=[640, 672, 704, 736, 768, 800],
    test_short_edge=800,
    max_size=1333,
    num_workers=4,
)
