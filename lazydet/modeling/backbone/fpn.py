"""Feature Pyramid Network (Lin et al. 2017) on top of a multi-scale backbone.

``FPN`` turns bottom-up features such as ``res2..res5`` (strides 4..32) into ``p2..p5`` with
``out_channels`` each, Detectron2 semantics: a 1x1 lateral conv per level; top-down, the coarser
merged map is upsampled x2 (nearest) and summed with the finer lateral ("avg" halves the sum);
a 3x3 output conv per merged map. A top block adds coarser levels: ``LastLevelMaxPool`` gives
``p6`` (stride-2 subsampling of ``p5``: Mask/Faster R-CNN), ``LastLevelP6P7`` gives ``p6, p7``
(3x3 stride-2 convs: RetinaNet), both in ``lazydet.modeling.backbone.top_block``. Output names are ``p{log2(stride)}``, taken from
``bottom_up.output_shape()``; with ``res2..res5`` and ``LastLevelMaxPool`` the output is the
lazydet multi-scale contract: ``p2..p6``, ``out_channels`` channels, strides 4..64.

Shapes: input ``Tensor[B, C, H, W]`` with ``H, W`` multiples of ``size_divisibility`` (the
coarsest bottom-up stride, 32 for ResNet, as in Detectron2) -> ``p{k}: Tensor[B, out_channels,
H / 2**k, W / 2**k]`` for the merged levels; top-block levels have ``ceil`` of the halved size
(they are never merged back, so padding to 64 or 128 is not needed). Other sizes also work: the
upsampling targets the finer map's exact size, as torchvision's FPN does.

Initialization: lateral, output and top-block convs use ``kaiming_uniform_(a=1)`` with zero bias,
which is Caffe2's "XavierFill" (uniform with variance 1/fan_in) as used by Detectron2 and by
torchvision's FPN.

Checkpoint names. Each lateral/output conv is ``nn.Sequential(conv[, norm])``, so:

* torchvision (``BackboneWithFPN``, e.g. ``maskrcnn_resnet50_fpn().backbone``) maps by prefix:
  ``body.`` -> ``bottom_up.``, ``fpn.inner_blocks.`` -> ``lateral_convs.``,
  ``fpn.layer_blocks.`` -> ``output_convs.``, ``fpn.extra_blocks.`` -> ``top_block.``
  (``p6``/``p7`` keep their names). ``convert_torchvision_fpn_state_dict`` does it.
* Detectron2: ``fpn_lateral{k}.weight/bias`` -> ``lateral_convs.{i}.0.weight/bias`` and
  ``fpn_lateral{k}.norm.*`` -> ``lateral_convs.{i}.1.*`` (likewise ``fpn_output{k}`` ->
  ``output_convs.{i}``), where ``i`` is the position of the level in ``in_features`` (``k - 2``
  for ``res2..res5``); ``top_block.p6/p7`` are unchanged; ``bottom_up.*`` follows the ResNet
  mapping in ``lazydet.modeling.backbone.resnet``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.layers import NormSpec, ShapeSpec, caffe2_xavier_fill, conv_norm_act
from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.backbone.top_block import LastLevelMaxPool, PyramidBackbone, level_name

__all__ = ["FPN", "convert_torchvision_fpn_state_dict"]


class FPN(PyramidBackbone):
    """Feature Pyramid Network over ``bottom_up`` (see the module docstring for semantics/names).

    Args:
        bottom_up: a multi-scale backbone, e.g. ``ResNet(depth=50)``.
        in_features: bottom-up features to merge, fine to coarse, each stride twice the previous.
        out_channels: channels of every pyramid level.
        top_block: adds coarser levels (``LastLevelMaxPool()``, ``LastLevelP6P7(...)`` from a
            pyramid level such as ``"p5"`` or a bottom-up feature such as ``"res5"``) or None;
            see ``lazydet.modeling.backbone.top_block``.
        norm: after each lateral and output conv (see ``lazydet.layers.get_norm``): None (convs
            with bias), a name such as ``"GN"`` (GroupNorm(32), no conv bias), or a factory.
        fuse_type: ``"sum"`` or ``"avg"`` of the lateral and the upsampled coarser level.
    """

    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        out_channels: int = 256,
        top_block: nn.Module | None = LastLevelMaxPool(),  # noqa: B008 (stateless, see its doc)
        norm: NormSpec = None,
        fuse_type: str = "sum",
    ) -> None:
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(
                f"FPN bottom_up must be a lazydet Backbone (with output_shape()), "
                f"got {type(bottom_up).__name__}."
            )
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FPN fuse_type={fuse_type!r} is not supported; use 'sum' or 'avg'.")
        in_features = tuple(in_features)
        bottom_up_shapes = bottom_up.output_shape()
        missing = [name for name in in_features if name not in bottom_up_shapes]
        if not in_features or missing:
            raise ValueError(
                f"FPN in_features={in_features!r}: {missing or 'empty'} not produced by the "
                f"bottom-up backbone, whose outputs are {list(bottom_up_shapes)}."
            )
        strides = [bottom_up_shapes[name].stride for name in in_features]
        if any(coarse != 2 * fine for fine, coarse in pairwise(strides)):
            raise ValueError(
                f"FPN in_features={in_features!r} have strides {strides}; list them fine to "
                "coarse with each stride twice the previous one."
            )

        self.bottom_up = bottom_up
        self.in_features = in_features
        self.fuse_type = fuse_type
        # Sequential(conv[, norm]) each, so the names are lateral_convs.{i}.0 / .1.
        self.lateral_convs = nn.ModuleList(
            conv_norm_act(
                bottom_up_shapes[name].channels,
                out_channels,
                1,
                norm=norm,
                init=caffe2_xavier_fill,
                owner="FPN norm",
            )
            for name in in_features
        )
        self.output_convs = nn.ModuleList(
            conv_norm_act(
                out_channels, out_channels, 3, norm=norm, init=caffe2_xavier_fill, owner="FPN norm"
            )
            for _ in in_features
        )
        self._init_pyramid(
            pyramid_shapes={
                level_name(stride, "FPN"): ShapeSpec(channels=out_channels, stride=stride)
                for stride in strides
            },
            bottom_up_shapes=bottom_up_shapes,
            top_block=top_block,
        )
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, C, H, W]`` -> ``{"p2": Tensor[B, out_channels, H/4, W/4], ...}``."""
        bottom_up_features = self.bottom_up(images)
        levels = [bottom_up_features[name] for name in self.in_features]

        merged = self.lateral_convs[-1](levels[-1])
        outputs = [self.output_convs[-1](merged)]
        for index in range(len(levels) - 2, -1, -1):
            lateral = self.lateral_convs[index](levels[index])
            # Upsample to the lateral's exact size (= x2 for padded inputs, as in Detectron2).
            top_down = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral + top_down
            if self.fuse_type == "avg":
                merged = merged / 2
            outputs.insert(0, self.output_convs[index](merged))

        results = dict(zip(self._pyramid_shapes, outputs))
        return self._add_top_levels(results, bottom_up_features)


_TORCHVISION_PREFIXES = {
    "body.": "bottom_up.",
    "fpn.inner_blocks.": "lateral_convs.",
    "fpn.layer_blocks.": "output_convs.",
    "fpn.extra_blocks.": "top_block.",
}


def convert_torchvision_fpn_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``BackboneWithFPN`` state dict to ``FPN(bottom_up=ResNet(...))`` names.

    ``prefix`` selects the backbone inside a larger checkpoint (``"backbone."`` for a whole
    ``torchvision.models.detection.MaskRCNN``); keys outside it are skipped. A key under the
    prefix that is not part of a torchvision ResNet-FPN backbone raises ValueError.
    """
    converted = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        for old, new in _TORCHVISION_PREFIXES.items():
            if name.startswith(old):
                converted[new + name[len(old) :]] = value
                break
        else:
            raise ValueError(
                f"convert_torchvision_fpn_state_dict: key {key!r} is not part of a torchvision "
                f"BackboneWithFPN (expected prefixes {list(_TORCHVISION_PREFIXES)} after "
                f"prefix={prefix!r})."
            )
    return converted
