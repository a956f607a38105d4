"""The backbone contract: a module that maps an image batch to named feature maps.

Every backbone takes a float image batch ``Tensor[B, C, H, W]`` (already normalized by the
meta-architecture) and returns ``dict[str, Tensor]`` of feature maps ``Tensor[B, C_f, H_f, W_f]``.
``output_shape()`` describes those maps *before* any input is seen, so heads can size themselves
from the backbone when the model is built instead of from numbers copied into configs.

Shapes are ``lazydet.layers.ShapeSpec`` (channels, stride). For inputs whose height and width are multiples of
``size_divisibility`` every map has exactly ``H / s`` rows and ``W / s`` columns.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

from lazydet.layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """Abstract base of all backbones (ResNet, ViT, FPN, SimpleFeaturePyramid).

    Subclasses implement ``forward(images) -> dict[str, Tensor]`` and ``output_shape()``; the two
    must agree on names, channels and strides (the backbone tests check this for every class).
    """

    @abstractmethod
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Map ``images: Tensor[B, C, H, W]`` to named feature maps ``Tensor[B, C_f, H_f, W_f]``."""

    @abstractmethod
    def output_shape(self) -> dict[str, ShapeSpec]:
        """Names of the returned features mapped to their channels and strides."""

    @property
    def size_divisibility(self) -> int:
        """Inputs should be padded so height and width are multiples of this (0: no constraint).

        ``ImageList.from_tensors(images, size_divisibility=backbone.size_divisibility)`` does it.
        """
        return 0
