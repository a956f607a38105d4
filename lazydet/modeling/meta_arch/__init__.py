"""Meta-architectures: whole detectors that take ``list[dict]`` inputs and return losses or
per-image ``Instances`` in original image coordinates."""

from lazydet.modeling.meta_arch.rcnn import GeneralizedRCNN
from lazydet.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead

__all__ = ["GeneralizedRCNN", "RetinaNet", "RetinaNetHead"]
