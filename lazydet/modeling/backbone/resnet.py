"""ResNet (18/34/50/101/152, and ResNeXt through ``groups``) as a detection backbone.

Input ``Tensor[B, in_channels, H, W]``; output a dict with the requested subset of
``res2..res5`` (torchvision's ``layer1..layer4``), ``Tensor[B, C, ceil(H/s), ceil(W/s)]`` with
strides ``s`` = 4, 8, 16, 32 (exactly ``H/s`` when ``H`` and ``W`` are multiples of 32).

Checkpoint names are torchvision's, one to one: ``conv1``, ``bn1`` (stem) and
``layer{1..4}.{block}.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}``. So an ImageNet
ResNet from torchvision loads directly::

    state = torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    ResNet(depth=50).load_state_dict(state)

(``FrozenBatchNorm2d`` ignores the ``num_batches_tracked`` buffers of a trained BatchNorm.)
Detectron2/MSRA checkpoints use other names (``stem.conv1``, ``stem.conv1.norm``,
``res{k}.{j}.conv{n}``, ``res{k}.{j}.conv{n}.norm``, ``res{k}.{j}.shortcut[.norm]``); they map
onto ``conv1``, ``bn1``, ``layer{k-1}.{j}.conv{n}``, ``layer{k-1}.{j}.bn{n}``,
``layer{k-1}.{j}.downsample.{0,1}``, and were trained on BGR input with ``stride_in_1x1=True``.

Stages that are not needed for ``out_features`` are not built (so a ``("res4",)`` backbone has no
``layer4`` parameters, which DDP would otherwise report as unused).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from lazydet.layers import NormSpec, ShapeSpec, caffe2_msra_fill, get_norm, has_norm
from lazydet.modeling.backbone.base import Backbone

__all__ = ["BasicBlock", "BottleneckBlock", "ResNet"]

STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_STRIDES = (4, 8, 16, 32)

# Blocks per stage for each depth (He et al. 2016, table 1).
_BLOCKS_PER_STAGE = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def _make_norm(norm: NormSpec, channels: int, *, frozen: bool = False) -> nn.Module:
    """The norm after a conv; in a frozen part a batch norm becomes ``FrozenBatchNorm2d``.

    Frozen parts never update batch statistics, so their BatchNorms (``"BN"``, ``"SyncBN"``,
    ``nn.BatchNorm2d`` or a partial of it) are frozen with the same eps; other norms are kept.
    """
    module = get_norm(norm, channels, owner="ResNet norm")
    if module is None:
        raise ValueError(
            "ResNet norm=None is not supported: every ResNet conv is followed by a norm "
            "(use 'FrozenBN', 'BN', 'SyncBN', 'GN' or a factory)."
        )
    if frozen and isinstance(module, nn.modules.batchnorm._BatchNorm):
        return FrozenBatchNorm2d(channels, eps=module.eps)
    return module


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
    # Convolutions carry no bias: every one is followed by a normalization layer.
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        groups=groups,
        bias=False,
    )


def _shortcut(
    in_channels: int, out_channels: int, stride: int, norm: NormSpec, frozen: bool
) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    # Sequential so the names are torchvision's downsample.0 (conv) and downsample.1 (norm).
    return nn.Sequential(
        _conv(in_channels, out_channels, 1, stride),
        _make_norm(norm, out_channels, frozen=frozen),
    )


def _residual_relu(out: Tensor, identity: Tensor) -> Tensor:
    """``relu(out + identity)`` written into ``out`` (the block's last norm output, which no
    norm's backward reads), as torchvision's blocks do: no fresh feature map per element-wise op
    (same values; on a loaded 2-core CPU the ResNet-50 forward time change was within noise)."""
    return F.relu_(out.add_(identity))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    ``Tensor[B, in_channels, H, W] -> Tensor[B, out_channels, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm: NormSpec,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, 3, stride)
        self.bn1 = _make_norm(norm, out_channels, frozen=frozen)
        self.conv2 = _conv(out_channels, out_channels, 3)
        self.bn2 = _make_norm(norm, out_channels, frozen=frozen)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm, frozen)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # In place, as torchvision: no norm's backward reads its output (see _residual_relu).
        return _residual_relu(out, identity)


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand, with a residual connection.

    ``stride_in_1x1=False`` puts the stride on the 3x3 convolution (torchvision, "ResNet v1.5");
    ``True`` puts it on the first 1x1 (the original paper, Caffe2/MSRA and Detectron2 weights).
    ``Tensor[B, in_channels, H, W] -> Tensor[B, out_channels, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        stride: int = 1,
        groups: int = 1,
        stride_in_1x1: bool = False,
        norm: NormSpec,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, stride_1x1)
        self.bn1 = _make_norm(norm, bottleneck_channels, frozen=frozen)
        self.conv2 = _conv(bottleneck_channels, bottleneck_channels, 3, stride_3x3, groups)
        self.bn2 = _make_norm(norm, bottleneck_channels, frozen=frozen)
        self.conv3 = _conv(bottleneck_channels, out_channels, 1)
        self.bn3 = _make_norm(norm, out_channels, frozen=frozen)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm, frozen)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return _residual_relu(out, identity)


class ResNet(Backbone):
    """ResNet backbone returning ``res2..res5`` feature maps (see the module docstring).

    Args:
        depth: 18, 34 (basic blocks) or 50, 101, 152 (bottleneck blocks).
        out_features: which of ``res2..res5`` to return, fine to coarse.
        freeze_at: how many leading parts are frozen: 0 nothing, 1 the stem, 2 stem and res2,
            ... 5 everything. Frozen parts get ``requires_grad=False`` and, with ``BN``/``SyncBN``,
            ``FrozenBatchNorm2d`` instead of batch statistics (Detectron2's default is 2).
        norm: after every conv (see ``lazydet.layers.get_norm``): ``"FrozenBN"`` (fixed ImageNet
            statistics; default for small detection batches), ``"BN"``, ``"SyncBN"``, ``"GN"``
            (32 groups), or a class/partial called with the channel count.
        stride_in_1x1: bottleneck only; see ``BottleneckBlock``. False matches torchvision weights.
        groups, width_per_group: ResNeXt cardinality and width (torchvision's ``resnext50_32x4d``
            is ``groups=32, width_per_group=4``); bottleneck only.
        in_channels: image channels.
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        out_features: Sequence[str] = STAGE_NAMES,
        freeze_at: int = 2,
        norm: NormSpec = "FrozenBN",
        stride_in_1x1: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(
                f"ResNet depth={depth!r} is not supported; use one of {sorted(_BLOCKS_PER_STAGE)}."
            )
        out_features = tuple(out_features)
        unknown = [name for name in out_features if name not in STAGE_NAMES]
        if not out_features or unknown:
            raise ValueError(
                f"ResNet out_features={out_features!r} must be a non-empty subset of {STAGE_NAMES}."
            )
        if len(set(out_features)) != len(out_features):
            raise ValueError(f"ResNet out_features={out_features!r} has duplicates.")
        if not 0 <= freeze_at <= 5:
            raise ValueError(
                f"ResNet freeze_at={freeze_at!r} must be in 0..5 (0 nothing, 1 stem, 2 stem+res2, ...)."
            )
        if not has_norm(norm):
            raise ValueError(
                f"ResNet norm={norm!r}: every ResNet conv is followed by a norm; use 'FrozenBN', "
                "'BN', 'SyncBN', 'GN' or a factory (see lazydet.layers.get_norm)."
            )
        get_norm(norm, 64, owner="ResNet norm")  # an unknown name fails here, before building
        bottleneck = depth >= 50
        if not bottleneck and (groups != 1 or width_per_group != 64):
            raise ValueError(
                f"ResNet depth={depth} uses basic blocks, which support only groups=1 and "
                f"width_per_group=64 (got {groups}, {width_per_group})."
            )

        # Keep outputs in stride order whatever order the caller listed them in.
        self.out_features = tuple(name for name in STAGE_NAMES if name in out_features)
        self.in_channels = in_channels
        self.freeze_at = freeze_at
        num_stages = STAGE_NAMES.index(self.out_features[-1]) + 1

        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # Part 0 is the stem, part i the stage res{i+1}; parts below freeze_at are frozen.
        self.bn1 = _make_norm(norm, 64, frozen=freeze_at > 0)

        channels = 64
        self._out_channels: dict[str, int] = {}
        for stage_index in range(num_stages):
            width = 64 * 2**stage_index
            stride = 1 if stage_index == 0 else 2  # res2 follows the stem's max-pool
            blocks: list[nn.Module] = []
            for block_index in range(_BLOCKS_PER_STAGE[depth][stage_index]):
                block_stride = stride if block_index == 0 else 1
                stage_frozen = stage_index + 1 < freeze_at
                if bottleneck:
                    out_channels = width * 4
                    block: nn.Module = BottleneckBlock(
                        in_channels=channels,
                        bottleneck_channels=int(width * width_per_group / 64) * groups,
                        out_channels=out_channels,
                        stride=block_stride,
                        groups=groups,
                        stride_in_1x1=stride_in_1x1,
                        norm=norm,
                        frozen=stage_frozen,
                    )
                else:
                    out_channels = width
                    block = BasicBlock(
                        in_channels=channels,
                        out_channels=out_channels,
                        stride=block_stride,
                        norm=norm,
                        frozen=stage_frozen,
                    )
                blocks.append(block)
                channels = out_channels
            self.add_module(f"layer{stage_index + 1}", nn.Sequential(*blocks))
            self._out_channels[STAGE_NAMES[stage_index]] = channels

        self._init_weights()
        self._freeze(freeze_at)

    def _init_weights(self) -> None:
        # He (MSRA) init for convs as torchvision and Detectron2 do; norms start as identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                caffe2_msra_fill(module)
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _freeze(self, freeze_at: int) -> None:
        frozen: list[nn.Module] = []
        if freeze_at >= 1:
            frozen += [self.conv1, self.bn1]
        for stage_index in range(min(freeze_at - 1, 4)):
            if hasattr(self, f"layer{stage_index + 1}"):
                frozen.append(getattr(self, f"layer{stage_index + 1}"))
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_channels[name], stride=STAGE_STRIDES[i])
            for i, name in enumerate(STAGE_NAMES)
            if name in self.out_features
        }

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, in_channels, H, W]`` -> ``{name: Tensor[B, C, ~H/s, ~W/s]}``."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet expects images of shape [B, {self.in_channels}, H, W], "
                f"got {tuple(images.shape)}."
            )
        x = F.relu_(self.bn1(self.conv1(images)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        outputs: dict[str, Tensor] = {}
        for stage_index, name in enumerate(STAGE_NAMES):
            if not hasattr(self, f"layer{stage_index + 1}"):
                break
            x = getattr(self, f"layer{stage_index + 1}")(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs
