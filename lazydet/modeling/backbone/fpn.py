"""Feature Pyramid Network (Lin et al. 2017) on top of a multi-scale backbone, and its top blocks.

``FPN`` turns bottom-up features such as ``res2..res5`` (strides 4..32) into ``p2..p5`` with
``out_channels`` each, Detectron2 semantics: a 1x1 lateral conv per level; top-down, the coarser
merged map is upsampled x2 (nearest) and summed with the finer lateral ("avg" halves the sum);
a 3x3 output conv per merged map. A top block adds coarser levels: ``LastLevelMaxPool`` gives
``p6`` (stride-2 subsampling of ``p5``: Mask/Faster R-CNN), ``LastLevelP6P7`` gives ``p6, p7``
(3x3 stride-2 convs: RetinaNet). Output names are ``p{log2(stride)}``, taken from
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

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.modeling.backbone.base import Backbone, ShapeSpec

__all__ = [
    "FPN",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "caffe2_xavier_fill",
    "convert_torchvision_fpn_state_dict",
    "resolve_top_block_input",
    "top_block_output_shapes",
]


def caffe2_xavier_fill(conv: nn.Conv2d) -> None:
    """Caffe2's XavierFill for a conv (uniform, variance 1/fan_in) and zero bias, in place."""
    # kaiming_uniform_ with a=1 draws from U(-sqrt(3/fan_in), sqrt(3/fan_in)), variance 1/fan_in.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


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
    Detectron2 default, ``in_channels`` = its channels) or a pyramid output (``"p5"``,
    torchvision's ``retinanet_resnet50_fpn_v2``, ``in_channels = out_channels``).
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


def _level_name(stride: int, owner: str) -> str:
    level = math.log2(stride)
    if not level.is_integer():
        raise ValueError(
            f"{owner}: stride {stride} is not a power of two, so it has no p-level name."
        )
    return f"p{int(level)}"


def resolve_top_block_input(
    top_block: nn.Module,
    *,
    pyramid_shapes: Mapping[str, ShapeSpec],
    bottom_up_shapes: Mapping[str, ShapeSpec],
    owner: str,
) -> tuple[str, bool]:
    """Which feature feeds ``top_block``: returns ``(name, from_pyramid)``.

    A ``top_block`` has ``num_levels: int``, ``in_feature: str | None`` (None: the coarsest
    pyramid output) and optionally ``in_channels: int``; its forward maps one feature map to
    ``num_levels`` maps, each halving the previous one. Raises ValueError naming ``owner`` when
    the feature does not exist or its channels do not match ``in_channels``.
    """
    for attribute in ("num_levels", "in_feature"):
        if not hasattr(top_block, attribute):
            raise TypeError(
                f"{owner}: top_block {type(top_block).__name__} has no `{attribute}` attribute; "
                "use LastLevelMaxPool, LastLevelP6P7 or a module with num_levels and in_feature."
            )
    name = top_block.in_feature
    if name is None:
        name = next(reversed(pyramid_shapes))
    if name in pyramid_shapes:
        shape, from_pyramid = pyramid_shapes[name], True
    elif name in bottom_up_shapes:
        shape, from_pyramid = bottom_up_shapes[name], False
    else:
        raise ValueError(
            f"{owner}: top_block.in_feature={name!r} is neither a pyramid output "
            f"{list(pyramid_shapes)} nor a bottom-up feature {list(bottom_up_shapes)}."
        )
    coarsest = next(reversed(pyramid_shapes))
    if shape.stride != pyramid_shapes[coarsest].stride:
        raise ValueError(
            f"{owner}: top_block.in_feature={name!r} has stride {shape.stride}, but the top block "
            f"must start from the coarsest level (stride {pyramid_shapes[coarsest].stride})."
        )
    expected = getattr(top_block, "in_channels", None)
    if expected is not None and expected != shape.channels:
        raise ValueError(
            f"{owner}: top_block expects in_channels={expected}, but {name!r} has "
            f"{shape.channels} channels; set in_channels={shape.channels}."
        )
    return name, from_pyramid


def top_block_output_shapes(
    top_block: nn.Module, coarsest_stride: int, channels: int, owner: str
) -> dict[str, ShapeSpec]:
    """Names and shapes of the levels ``top_block`` adds after the level of ``coarsest_stride``."""
    shapes = {}
    stride = coarsest_stride
    for _ in range(top_block.num_levels):
        stride *= 2
        shapes[_level_name(stride, owner)] = ShapeSpec(channels=channels, stride=stride)
    return shapes


def _conv_norm(
    in_channels: int, out_channels: int, kernel_size: int, norm: str | None
) -> nn.Sequential:
    if norm not in (None, "", "GN"):
        raise ValueError(f"FPN norm={norm!r} is not supported; use None or 'GN'.")
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not norm
    )
    caffe2_xavier_fill(conv)
    layers: list[nn.Module] = [conv]
    if norm == "GN":
        layers.append(nn.GroupNorm(32, out_channels))
    return nn.Sequential(*layers)


class FPN(Backbone):
    """Feature Pyramid Network over ``bottom_up`` (see the module docstring for semantics/names).

    Args:
        bottom_up: a multi-scale backbone, e.g. ``ResNet(depth=50)``.
        in_features: bottom-up features to merge, fine to coarse, each stride twice the previous.
        out_channels: channels of every pyramid level.
        top_block: adds coarser levels (``LastLevelMaxPool()``, ``LastLevelP6P7(...)``) or None.
        norm: None (convs with bias) or ``"GN"`` (GroupNorm(32) after each conv, no bias).
        fuse_type: ``"sum"`` or ``"avg"`` of the lateral and the upsampled coarser level.
    """

    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        out_channels: int = 256,
        top_block: nn.Module | None = LastLevelMaxPool(),  # noqa: B008 (stateless, see its doc)
        norm: str | None = None,
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
        self.lateral_convs = nn.ModuleList(
            _conv_norm(bottom_up_shapes[name].channels, out_channels, 1, norm)
            for name in in_features
        )
        self.output_convs = nn.ModuleList(
            _conv_norm(out_channels, out_channels, 3, norm) for _ in in_features
        )

        self._output_shapes = {
            _level_name(stride, "FPN"): ShapeSpec(channels=out_channels, stride=stride)
            for stride in strides
        }
        self.top_block = top_block
        self._top_block_input: tuple[str, bool] | None = None
        if top_block is not None:
            self._top_block_input = resolve_top_block_input(
                top_block,
                pyramid_shapes=self._output_shapes,
                bottom_up_shapes=bottom_up_shapes,
                owner="FPN",
            )
            self._output_shapes.update(
                top_block_output_shapes(top_block, strides[-1], out_channels, "FPN")
            )
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._output_shapes)

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

        names = list(self._output_shapes)
        results = dict(zip(names, outputs))
        if self.top_block is not None:
            name, from_pyramid = self._top_block_input
            source = results[name] if from_pyramid else bottom_up_features[name]
            results.update(zip(names[len(outputs) :], self.top_block(source)))
        return results


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
