"""ViTDet's simple feature pyramid: a multi-scale pyramid from the single map of a plain ViT.

From ``net``'s feature ``in_feature`` (stride ``s``, ``C`` channels; ``last_feat``, stride 16 for
``ViT``) each scale factor builds one level of stride ``s / scale``:

* ``4.0``: ConvTranspose 2x2/2 (``C -> C/2``), LayerNorm, GELU, ConvTranspose 2x2/2 (``-> C/4``)
* ``2.0``: ConvTranspose 2x2/2 (``C -> C/2``)
* ``1.0``: the map itself
* ``0.5``: max-pool 2x2/2

followed by a 1x1 conv to ``out_channels`` and a 3x3 conv, each with a channel LayerNorm when
``norm="LN"`` (and no conv bias then). A top block (``LastLevelMaxPool`` by default) adds
coarser levels from the coarsest one. With the defaults the output is lazydet's multi-scale
contract, the same as ``FPN(bottom_up=ResNet(...))``: ``p2..p6``, 256 channels, strides 4..64,
``p{k}: Tensor[B, 256, H / 2**k, W / 2**k]`` for inputs that are multiples of
``size_divisibility`` (32 with scale 0.5: the coarsest pyramid stride, as Detectron2; p6 is
``ceil`` of half of p5). ViTDet also pads every image to a fixed 1024x1024 square; lazydet leaves
that to the data pipeline (fixed-size large-scale-jitter crops).

The 1x1/3x3 convs are initialized with ``kaiming_uniform_(a=1)`` and zero bias (Caffe2
"XavierFill", as Detectron2); transposed convs keep PyTorch's default initialization.

Checkpoint names: ``net.*`` is the ViT; stage ``i`` (in ``scale_factors`` order) has
``stages.{i}.resample.{j}`` (the layers listed above), ``stages.{i}.lateral.{0: conv, 1: norm}``
and ``stages.{i}.output.{0: conv, 1: norm}``. Detectron2's ``simfp_{k}.{j}`` (``k`` =
``log2`` of the level's stride) map to ``stages.{i}.resample.{j}`` for the resampling layers,
and its two following convs ``simfp_{k}.{n}`` / ``simfp_{k}.{n}.norm`` / ``simfp_{k}.{n+1}`` /
``simfp_{k}.{n+1}.norm`` to ``stages.{i}.lateral.0`` / ``.lateral.1`` / ``.output.0`` /
``.output.1``; ``top_block`` is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from lazydet.layers import NormSpec, ShapeSpec, caffe2_xavier_fill, conv_norm_act, get_norm
from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.backbone.top_block import LastLevelMaxPool, PyramidBackbone, level_name

__all__ = ["SimpleFeaturePyramid"]

SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: NormSpec):
    return conv_norm_act(
        in_channels,
        out_channels,
        kernel_size,
        norm=norm,
        init=caffe2_xavier_fill,
        owner="SimpleFeaturePyramid norm",
    )


def _resample(scale: float, channels: int, norm: NormSpec) -> tuple[nn.Sequential, int]:
    if scale == 4.0:
        # Identity without a norm keeps the indices (resample.2 is the GELU) of ViTDet's layout.
        mid_norm = get_norm(norm, channels // 2, owner="SimpleFeaturePyramid norm")
        layers = [
            nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2),
            nn.Identity() if mid_norm is None else mid_norm,
            nn.GELU(),
            nn.ConvTranspose2d(channels // 2, channels // 4, kernel_size=2, stride=2),
        ]
        return nn.Sequential(*layers), channels // 4
    if scale == 2.0:
        return nn.Sequential(
            nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)
        ), channels // 2
    if scale == 1.0:
        return nn.Sequential(), channels
    if scale == 0.5:
        return nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2)), channels
    raise ValueError(
        f"SimpleFeaturePyramid scale factor {scale!r} is not supported; use some of {SCALE_FACTORS}."
    )


class _PyramidStage(nn.Module):
    def __init__(
        self, *, scale: float, in_channels: int, out_channels: int, norm: NormSpec
    ) -> None:
        super().__init__()
        self.resample, channels = _resample(scale, in_channels, norm)
        self.lateral = _conv_norm(channels, out_channels, 1, norm)
        self.output = _conv_norm(out_channels, out_channels, 3, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.lateral(self.resample(x)))


class SimpleFeaturePyramid(PyramidBackbone):
    """Multi-scale pyramid from one feature of a plain backbone (see the module docstring).

    Args:
        net: the plain backbone, e.g. ``ViT(...)`` or ``vit_b()``.
        in_feature: the feature of ``net`` to build from.
        out_channels: channels of every pyramid level.
        scale_factors: subset of ``(4.0, 2.0, 1.0, 0.5)``, decreasing (fine to coarse).
        top_block: adds coarser levels from the coarsest one (``LastLevelMaxPool()``) or None.
        norm: after each conv and between the x4 deconvs (see ``lazydet.layers.get_norm``):
            ``"LN"`` (channel LayerNorm, ViTDet), another name or factory, or None (convs with
            bias).
    """

    def __init__(
        self,
        *,
        net: Backbone,
        in_feature: str = "last_feat",
        out_channels: int = 256,
        scale_factors: Sequence[float] = SCALE_FACTORS,
        top_block: nn.Module | None = LastLevelMaxPool(),  # noqa: B008 (stateless, see its doc)
        norm: NormSpec = "LN",
    ) -> None:
        super().__init__()
        if not isinstance(net, Backbone):
            raise TypeError(
                f"SimpleFeaturePyramid net must be a lazydet Backbone, got {type(net).__name__}."
            )
        net_shapes = net.output_shape()
        if in_feature not in net_shapes:
            raise ValueError(
                f"SimpleFeaturePyramid in_feature={in_feature!r} is not an output of net "
                f"({list(net_shapes)})."
            )
        scale_factors = tuple(float(scale) for scale in scale_factors)
        if not scale_factors or list(scale_factors) != sorted(set(scale_factors), reverse=True):
            raise ValueError(
                f"SimpleFeaturePyramid scale_factors={scale_factors!r} must be distinct and "
                "decreasing (fine to coarse), e.g. (4.0, 2.0, 1.0, 0.5)."
            )
        in_shape = net_shapes[in_feature]
        self.net = net
        self.in_feature = in_feature
        self.stages = nn.ModuleList(
            _PyramidStage(
                scale=scale, in_channels=in_shape.channels, out_channels=out_channels, norm=norm
            )
            for scale in scale_factors
        )
        strides = [in_shape.stride / scale for scale in scale_factors]
        for stride in strides:
            if not stride.is_integer() or not math.log2(stride).is_integer():
                raise ValueError(
                    f"SimpleFeaturePyramid: {in_feature!r} stride {in_shape.stride} with scale "
                    f"factors {scale_factors} gives stride {stride}, not a power of two."
                )
        self._init_pyramid(
            pyramid_shapes={
                level_name(int(stride), "SimpleFeaturePyramid"): ShapeSpec(
                    channels=out_channels, stride=int(stride)
                )
                for stride in strides
            },
            bottom_up_shapes={},
            top_block=top_block,
        )
        self._size_divisibility = int(strides[-1])

    @property
    def size_divisibility(self) -> int:
        return max(self._size_divisibility, self.net.size_divisibility)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, C, H, W]`` -> ``{"p2": Tensor[B, out_channels, H/4, W/4], ...}``."""
        feature = self.net(images)[self.in_feature]
        results = {name: stage(feature) for name, stage in zip(self._pyramid_shapes, self.stages)}
        return self._add_top_levels(results, {})
