"""Anchor boxes tiled over multi-level feature maps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lazydet.layers import ShapeSpec
from lazydet.structures import Boxes

CellAnchorOrder = Literal["size_major", "ratio_major"]
AnchorSpacing = Literal["stride", "padded_size"]


class DefaultAnchorGenerator(nn.Module):
    """Anchors of given sizes and aspect ratios at every location of every feature level.

    For each level a set of "cell anchors" centred on ``(0, 0)`` is built, one per (size,
    aspect ratio) pair: area ``size**2``, ``height / width == aspect_ratio``. They are then
    shifted to the location ``((x + offset) * stride, (y + offset) * stride)`` of every feature
    map cell ``(x, y)``.

    The strides are not given here: they belong to the feature maps, so the caller (RPN,
    RetinaNet) passes the strides its backbone's ``output_shape()`` reports. This keeps configs
    from repeating them.

    Args:
        sizes: per level, the anchor sizes (square root of the area) in pixels, e.g.
            ``[[32], [64], [128], [256], [512]]`` for an FPN. A single entry is used for every
            level.
        aspect_ratios: per level, the ``height / width`` ratios; or one flat list for all levels.
        offset: where in its feature cell an anchor is centred, in units of the stride: ``0.0``
            (torchvision, Detectron2's default) puts it on the cell's top-left corner, ``0.5``
            on its centre.
        round_base_anchors: round the cell anchors' coordinates to whole pixels, as torchvision
            does; Detectron2 does not.
        cell_anchor_order: order of the anchors at one location, which a head's output channels
            follow: ``"size_major"`` (Detectron2: for each size, every ratio) or
            ``"ratio_major"`` (torchvision: for each ratio, every size). Only matters with several
            sizes per level; matters for loading a checkpoint trained with the other order.
        spacing: how far apart a level's anchors are. ``"stride"`` (Detectron2): the level's
            stride, as the backbone reports it. ``"padded_size"`` (torchvision): per axis, the
            padded batch size divided (integer division) by the feature map size, e.g.
            ``800 // 13 = 61`` rather than 64 for P6 of an 800-pixel batch (P6 is
            ``ceil(25 / 2) = 13`` cells). The two agree when the padded size is a multiple of
            every level's stride; torchvision's weights expect the second on other sizes.
            ``forward`` then needs ``padded_size``.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]] | Sequence[float] = (0.5, 1.0, 2.0),
        offset: float = 0.0,
        round_base_anchors: bool = False,
        cell_anchor_order: CellAnchorOrder = "size_major",
        spacing: AnchorSpacing = "stride",
    ) -> None:
        super().__init__()
        if not sizes or not all(isinstance(s, Sequence) and len(s) > 0 for s in sizes):
            raise ValueError(
                "sizes must be a non-empty list with one non-empty list of sizes per feature "
                f"level, e.g. [[32], [64], [128]]; got {sizes!r}."
            )
        if not aspect_ratios:
            raise ValueError("aspect_ratios must not be empty.")
        if all(isinstance(r, (int, float)) for r in aspect_ratios):
            aspect_ratios = [list(aspect_ratios)]  # type: ignore[list-item]
        if len(aspect_ratios) not in (1, len(sizes)):
            raise ValueError(
                f"aspect_ratios has {len(aspect_ratios)} levels but sizes has {len(sizes)}; give "
                "one flat list for all levels or one list per level."
            )
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"offset must be within [0, 1), got {offset}.")
        if cell_anchor_order not in ("size_major", "ratio_major"):
            raise ValueError(
                f"cell_anchor_order must be 'size_major' or 'ratio_major', got {cell_anchor_order!r}."
            )
        if spacing not in ("stride", "padded_size"):
            raise ValueError(f"spacing must be 'stride' or 'padded_size', got {spacing!r}.")
        num_levels = max(len(sizes), len(aspect_ratios))
        self.sizes = [
            [float(s) for s in sizes[i if len(sizes) > 1 else 0]] for i in range(num_levels)
        ]
        self.aspect_ratios = [
            [float(r) for r in aspect_ratios[i if len(aspect_ratios) > 1 else 0]]  # type: ignore[union-attr]
            for i in range(num_levels)
        ]
        for level_sizes, level_ratios in zip(self.sizes, self.aspect_ratios):
            if any(s <= 0 for s in level_sizes) or any(r <= 0 for r in level_ratios):
                raise ValueError(
                    f"anchor sizes and aspect ratios must be positive, got sizes {level_sizes} "
                    f"and aspect ratios {level_ratios}."
                )
        self.offset = float(offset)
        self.round_base_anchors = bool(round_base_anchors)
        self.cell_anchor_order = cell_anchor_order
        self.spacing = spacing
        # Buffers follow the module across .to(device); not persistent, as they are derived
        # from the arguments above and have no place in a checkpoint.
        for level, (level_sizes, level_ratios) in enumerate(zip(self.sizes, self.aspect_ratios)):
            self.register_buffer(
                f"cell_anchors_{level}",
                self._cell_anchors(level_sizes, level_ratios),
                persistent=False,
            )

    @property
    def num_levels(self) -> int:
        """Number of configured levels; a single configured level is used for every level."""
        return len(self.sizes)

    @property
    def num_cell_anchors(self) -> list[int]:
        """Number of anchors per feature map location, per configured level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def _cell_anchors(self, sizes: list[float], aspect_ratios: list[float]) -> Tensor:
        """``[len(sizes) * len(aspect_ratios), 4]`` XYXY anchors centred on (0, 0)."""
        if self.cell_anchor_order == "size_major":
            pairs = [(s, r) for s in sizes for r in aspect_ratios]
        else:
            pairs = [(s, r) for r in aspect_ratios for s in sizes]
        anchors = []
        for size, ratio in pairs:
            # width * height == size**2 and height / width == ratio.
            half_w = size / math.sqrt(ratio) / 2.0
            half_h = size * math.sqrt(ratio) / 2.0
            anchors.append([-half_w, -half_h, half_w, half_h])
        cell = torch.tensor(anchors, dtype=torch.float32)
        return cell.round() if self.round_base_anchors else cell

    def _cell_anchors_of_level(self, level: int) -> Tensor:
        return getattr(self, f"cell_anchors_{level if self.num_levels > 1 else 0}")

    def forward(
        self,
        features: Sequence[Tensor],
        strides: Sequence[int],
        *,
        padded_size: Sequence[int] | None = None,
    ) -> list[Boxes]:
        """Anchors for each level.

        Args:
            features: per level, a ``[B, C, H_l, W_l]`` feature map (only its size is used).
            strides: per level, the feature map's stride in input pixels.
            padded_size: ``(height, width)`` of the padded image batch the features were
                computed from (``images.tensor.shape[-2:]``); needed with
                ``spacing="padded_size"``, ignored otherwise.

        Returns:
            Per level, ``Boxes`` of ``H_l * W_l * A_l`` XYXY anchors in input pixels, ordered by
            location (row-major) then by cell anchor, the layout of a head's
            ``[B, A_l * k, H_l, W_l]`` output permuted to ``[B, H_l, W_l, A_l, k]``. The same for
            every image in the batch.
        """
        if len(strides) != len(features):
            raise ValueError(
                f"got {len(features)} feature maps but {len(strides)} strides; give one stride "
                "per feature map."
            )
        if self.num_levels not in (1, len(features)):
            raise ValueError(
                f"the anchor generator is configured for {self.num_levels} levels but got "
                f"{len(features)} feature maps; give sizes for each level (or a single one)."
            )
        anchors = []
        for level, (feature, stride) in enumerate(zip(features, strides)):
            cell = self._cell_anchors_of_level(level).to(feature.device)
            height, width = feature.shape[-2:]
            stride_y, stride_x = self._level_spacing(stride, height, width, padded_size)
            shift_x = (
                torch.arange(width, dtype=torch.float32, device=cell.device) + self.offset
            ) * stride_x
            shift_y = (
                torch.arange(height, dtype=torch.float32, device=cell.device) + self.offset
            ) * stride_y
            grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=-1).reshape(-1, 1, 4)
            anchors.append(Boxes((shifts + cell.reshape(1, -1, 4)).reshape(-1, 4)))
        return anchors

    def _level_spacing(
        self, stride: int, height: int, width: int, padded_size: Sequence[int] | None
    ) -> tuple[float, float]:
        """``(spacing_y, spacing_x)`` of one level's ``height x width`` anchor grid, in pixels."""
        if self.spacing == "stride":
            return stride, stride
        if padded_size is None or len(padded_size) != 2:
            raise ValueError(
                "DefaultAnchorGenerator(spacing='padded_size') needs padded_size=(height, width) "
                f"of the padded image batch, got {padded_size!r}; pass images.tensor.shape[-2:]."
            )
        padded_height, padded_width = (int(s) for s in padded_size)
        if padded_height < height or padded_width < width:
            raise ValueError(
                f"padded_size {(padded_height, padded_width)} is smaller than a {height}x{width} "
                "feature map; pass the size of the padded image batch the features come from."
            )
        # Integer division, as torchvision: the spacing of its weights' anchors.
        return padded_height // max(height, 1), padded_width // max(width, 1)


def shared_head_channels(
    owner: str,
    input_shape: Mapping[str, ShapeSpec],
    in_features: Sequence[str],
    anchor_generator: DefaultAnchorGenerator,
) -> int:
    """The channel count of ``in_features``, for a head shared across those pyramid levels.

    Dense heads (RPN, RetinaNet) run one set of weights on every level, so the levels must exist
    in ``input_shape``, share one channel count and one number of anchors per location, and the
    anchor generator must have sizes for one level or for each of them. ``owner`` names the module
    in the error messages.
    """
    in_features = list(in_features)
    missing = [name for name in in_features if name not in input_shape]
    if not in_features or missing:
        raise ValueError(
            f"{owner} in_features {in_features} must be non-empty names among the backbone "
            f"outputs {sorted(input_shape)}; missing {missing}. Pick names from the backbone's "
            "output_shape()."
        )
    channels = {input_shape[name].channels for name in in_features}
    if len(channels) != 1:
        raise ValueError(
            f"{owner} shares one head across levels, so all in_features need the same channel "
            f"count; got { {name: input_shape[name].channels for name in in_features} }."
        )
    if anchor_generator.num_levels not in (1, len(in_features)):
        raise ValueError(
            f"anchor_generator has sizes for {anchor_generator.num_levels} levels but {owner} "
            f"runs on {len(in_features)} in_features {in_features}."
        )
    if len(set(anchor_generator.num_cell_anchors)) != 1:
        raise ValueError(
            f"{owner} shares one head across levels, so every level needs the same number of "
            f"anchors per location; got {anchor_generator.num_cell_anchors}."
        )
    return channels.pop()
