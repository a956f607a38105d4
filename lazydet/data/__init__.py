"""Datasets, mapping to model inputs, samplers and loaders.

Flow: ``DatasetCatalog.get(name) -> list[dict]`` -> ``DatasetMapper`` (read image, augment image,
boxes, masks and keypoints together with torchvision.transforms.v2) -> ``dict(image, instances)``
-> samplers and ``build_train_loader`` / ``build_test_loader`` -> batches ``list[dict]``.
Importing this package registers the built-in dataset names (coco_2017_*, keypoints_coco_2017_*,
voc_*, shapes_*).
"""

from .augmentation import (
    large_scale_jitter,
    resize_longest_edge,
    resize_shortest_edge,
    test_augmentations,
    train_augmentations,
)
from .build import (
    AspectRatioGroupedBatches,
    build_test_loader,
    build_train_loader,
    get_detection_dataset_dicts,
    seed_worker,
)
from .catalog import (
    DatasetCatalog,
    Metadata,
    MetadataCatalog,
    dataset_name,
    flip_indices_from_metadata,
    keypoint_flip_indices,
)
from .datasets import (
    coco_json_dataset,
    coco_json_metadata,
    load_coco_json,
    load_voc_instances,
    register_all_builtin,
    register_coco,
    register_coco_json_resolvers,
    register_pascal_voc,
    register_shapes,
)
from .mapper import DatasetMapper, read_image
from .samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from .serialized import SerializedList

register_all_builtin()
register_coco_json_resolvers()  # the ${coco_json.*} of conf/dataset/coco_json.py

__all__ = [
    "AspectRatioGroupedBatches",
    "DatasetCatalog",
    "DatasetMapper",
    "InferenceSampler",
    "Metadata",
    "MetadataCatalog",
    "RepeatFactorTrainingSampler",
    "SerializedList",
    "TrainingSampler",
    "build_test_loader",
    "build_train_loader",
    "coco_json_dataset",
    "coco_json_metadata",
    "dataset_name",
    "flip_indices_from_metadata",
    "get_detection_dataset_dicts",
    "keypoint_flip_indices",
    "large_scale_jitter",
    "load_coco_json",
    "load_voc_instances",
    "read_image",
    "register_all_builtin",
    "register_coco",
    "register_coco_json_resolvers",
    "register_pascal_voc",
    "register_shapes",
    "repeat_factors_from_category_frequency",
    "resize_longest_edge",
    "resize_shortest_edge",
    "seed_worker",
    "test_augmentations",
    "train_augmentations",
]
