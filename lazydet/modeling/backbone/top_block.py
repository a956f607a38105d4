"""Extra coarse pyramid levels ("top blocks") and the one place that attaches them to a pyramid.

A top block maps one feature map to ``num_levels`` coarser maps, each half the size of the one
before: ``LastLevelMaxPool`` adds ``p6`` (Mask/Faster R-CNN), ``LastLevelP6P7`` adds ``p6`` and
``p7`` (RetinaNet). Its ``in_feature`` says which feature feeds it:

* a pyramid output, e.g. ``"p5"`` (torchvision's RetinaNet; ``None`` means the coarsest one), or
* a bottom-up feature, e.g. ``"res5"`` (the RetinaNet paper and Detectron2: "P3-P5 from
  res3-res5, P6/P7 from res5"); only ``FPN`` has bottom-up features to offer.

``PyramidBackbone`` (the base of ``FPN`` and ``SimpleFeaturePyramid``) resolves that input, names
the added levels ``p{log2(stride)}`` and runs the block; ``set_top_block`` swaps the block of a
built pyramid, which is how ``RetinaNet(top_block=...)`` gets ``p6``/``p7`` on any backbone
option of the ``p2..p6`` contract. The parameters then live at ``backbone.top_block.*``, the
names Detectron2's checkpoints use (``backbone.top_block.p6.weight``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.layers import ShapeSpec, caffe2_xavier_fill
from lazydet.modeling.backbone.base import Backbone

__all__ = ["LastLevelMaxPool", "LastLevelP6P7", "PyramidBackbone", "level_name"]


class LastLevelMaxPool(nn.Module):
    """One extra level by stride-2 subsampling (max-pool with kernel 1) of a pyramid level.

    ``in_feature=None`` uses the coarsest pyramid output (``p5`` for ``res2..res5``).
    ``forward(x: Tensor[B, C, H, W]) -> [Tensor[B, C, ceil(H/2), ceil(W/2)]]``.
    It holds no parameters or state, so one instance may be shared by several pyramids.
    """

    num_levels = 1

    def __init__(self, *, in_feature: str | None = None) -> None:
        super().__init__()
        self.in_feature = in_feature

    def forward(self, x: Tensor) -> list[Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """RetinaNet's two extra levels: ``p6 = conv3x3/2(x)``, ``p7 = conv3x3/2(relu(p6))``.

    ``in_feature`` names the input: a bottom-up feature (``"res5"``, the RetinaNet paper and
    Detectron2 default, ``in_channels`` = its channels, 2048 for a ResNet-50) or a pyramid output
    (``"p5"``, torchvision's ``retinanet_resnet50_fpn``, ``in_channels = out_channels``).
    ``forward(x: Tensor[B, in_channels, H, W]) -> [p6: Tensor[B, out_channels, ceil(H/2),
    ceil(W/2)], p7: Tensor[B, out_channels, ceil(H/4), ceil(W/4)]]``.
    """

    num_levels = 2

    def __init__(self, *, in_channels: int, out_channels: int, in_feature: str = "res5") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            caffe2_xavier_fill(conv)

    def forward(self, x: Tensor) -> list[Tensor]:
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


def level_name(stride: int, owner: str) -> str:
    """``p{log2(stride)}``; ValueError naming ``owner`` when the stride is not a power of two."""
    level = math.log2(stride)
    if not level.is_integer():
        raise ValueError(
            f"{owner}: stride {stride} is not a power of two, so it has no p-level name."
        )
    return f"p{int(level)}"


class PyramidBackbone(Backbone):
    """Base of the pyramids (``FPN``, ``SimpleFeaturePyramid``): their levels plus a top block.

    A subclass computes its own levels and calls ``_init_pyramid`` once with their shapes (fine
    to coarse) and the features it can offer the top block from below; ``forward`` then ends
    with ``_add_top_levels``.
    """

    top_block: nn.Module | None

    def _init_pyramid(
        self,
        *,
        pyramid_shapes: Mapping[str, ShapeSpec],
        bottom_up_shapes: Mapping[str, ShapeSpec],
        top_block: nn.Module | None,
    ) -> None:
        self._pyramid_shapes = dict(pyramid_shapes)
        self._bottom_up_shapes = dict(bottom_up_shapes)
        self.set_top_block(top_block)

    def set_top_block(self, top_block: nn.Module | None) -> None:
        """Use ``top_block`` (or none) for the levels after the coarsest pyramid level.

        ``top_block`` has ``num_levels: int``, ``in_feature: str | None`` and optionally
        ``in_channels: int`` (see the module docstring). Raises TypeError/ValueError naming the
        pyramid when the feature it asks for does not exist or its channels do not match.
        """
        owner = type(self).__name__
        shapes = dict(self._pyramid_shapes)
        top_input: tuple[str, bool] | None = None
        if top_block is not None:
            top_input = self._resolve_top_block_input(top_block, owner)
            coarsest = next(reversed(self._pyramid_shapes.values()))
            stride = coarsest.stride
            for _ in range(top_block.num_levels):
                stride *= 2
                shapes[level_name(stride, owner)] = ShapeSpec(
                    channels=coarsest.channels, stride=stride
                )
        self.top_block = top_block
        self._top_block_input = top_input
        self._output_shapes = shapes

    def _resolve_top_block_input(self, top_block: nn.Module, owner: str) -> tuple[str, bool]:
        """Which feature feeds ``top_block``: ``(name, from_pyramid)``."""
        for attribute in ("num_levels", "in_feature"):
            if not hasattr(top_block, attribute):
                raise TypeError(
                    f"{owner}: top_block {type(top_block).__name__} has no `{attribute}` "
                    "attribute; use LastLevelMaxPool, LastLevelP6P7 or a module with num_levels "
                    "and in_feature."
                )
        pyramid, bottom_up = self._pyramid_shapes, self._bottom_up_shapes
        coarsest = next(reversed(pyramid))
        name = top_block.in_feature if top_block.in_feature is not None else coarsest
        if name in pyramid:
            shape, from_pyramid = pyramid[name], True
        elif name in bottom_up:
            shape, from_pyramid = bottom_up[name], False
        else:
            raise ValueError(
                f"{owner}: top_block.in_feature={name!r} is neither a pyramid output "
                f"{list(pyramid)} nor a bottom-up feature {list(bottom_up)}."
            )
        if shape.stride != pyramid[coarsest].stride:
            raise ValueError(
                f"{owner}: top_block.in_feature={name!r} has stride {shape.stride}, but the top "
                f"block must start from the coarsest level (stride {pyramid[coarsest].stride})."
            )
        expected = getattr(top_block, "in_channels", None)
        if expected is not None and expected != shape.channels:
            raise ValueError(
                f"{owner}: top_block expects in_channels={expected}, but {name!r} has "
                f"{shape.channels} channels; set in_channels={shape.channels}."
            )
        return name, from_pyramid

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._output_shapes)

    def _add_top_levels(
        self, results: dict[str, Tensor], bottom_up_features: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """``results`` (the pyramid levels, fine to coarse) plus the top block's levels."""
        if self.top_block is None:
            return results
        name, from_pyramid = self._top_block_input
        source = results[name] if from_pyramid else bottom_up_features[name]
        extra_names = list(self._output_shapes)[len(self._pyramid_shapes) :]
        results.update(zip(extra_names, self.top_block(source)))
        return results
