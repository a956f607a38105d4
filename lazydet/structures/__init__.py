"""Data structures shared by every part of lazydet (the ground floor: imports only torch,
torchvision, numpy and pycocotools).

Coordinates are XYXY absolute pixels unless a docstring says otherwise.
"""

from lazydet.structures.boxes import Boxes, pairwise_ioa, pairwise_iou
from lazydet.structures.image_list import ImageList
from lazydet.structures.instances import Instances
from lazydet.structures.keypoints import Keypoints
from lazydet.structures.masks import BitMasks, PolygonMasks

__all__ = [
    "BitMasks",
    "Boxes",
    "ImageList",
    "Instances",
    "Keypoints",
    "PolygonMasks",
    "pairwise_ioa",
    "pairwise_iou",
]
