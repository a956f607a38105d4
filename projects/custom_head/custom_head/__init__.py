"""A lighter Mask R-CNN mask head, defined outside lazydet and wired in by config only."""

from .heads import LightMaskHead

__all__ = ["LightMaskHead"]
