"""Dataset loaders (COCO json, Pascal VOC XML, the synthetic ``shapes`` set) and built-in names."""

from .builtin import (
    COCO_KEYPOINT_FLIP_MAP,
    COCO_KEYPOINT_NAMES,
    COCO_KEYPOINT_OKS_SIGMAS,
    COCO_THING_CLASSES,
    datasets_root,
    register_all_builtin,
)
from .coco import load_coco_json, register_coco
from .coco_json import coco_json_dataset, coco_json_metadata, register_coco_json_resolvers
from .shapes import (
    SHAPES_CLASSES,
    SHAPES_KEYPOINT_FLIP_MAP,
    SHAPES_KEYPOINT_NAMES,
    generate_shapes,
    lazydet_cache_dir,
    register_shapes,
    shapes_split_dir,
)
from .voc import VOC_CLASSES, load_voc_instances, register_pascal_voc

__all__ = [
    "COCO_KEYPOINT_FLIP_MAP",
    "COCO_KEYPOINT_NAMES",
    "COCO_KEYPOINT_OKS_SIGMAS",
    "COCO_THING_CLASSES",
    "SHAPES_CLASSES",
    "SHAPES_KEYPOINT_FLIP_MAP",
    "SHAPES_KEYPOINT_NAMES",
    "VOC_CLASSES",
    "coco_json_dataset",
    "coco_json_metadata",
    "datasets_root",
    "generate_shapes",
    "lazydet_cache_dir",
    "load_coco_json",
    "load_voc_instances",
    "register_all_builtin",
    "register_coco",
    "register_coco_json_resolvers",
    "register_pascal_voc",
    "register_shapes",
    "shapes_split_dir",
]
