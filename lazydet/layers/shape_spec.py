"""``ShapeSpec``: what a feature map is before any input is seen (channels and stride).

Backbones describe their outputs with ``output_shape() -> dict[str, ShapeSpec]``; heads size
themselves from it when the model is built, so configs never repeat a channel count or a stride.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ShapeSpec", "check_positive_sizes"]


@dataclass(frozen=True)
class ShapeSpec:
    """Static description of one feature map: its channel count and its stride in input pixels.

    A feature of stride ``s`` covers ``s x s`` input pixels per cell: cell ``(i, j)`` starts at
    input pixel ``(s * i, s * j)``.
    """

    channels: int
    stride: int

    def __post_init__(self) -> None:
        for field_name in ("channels", "stride"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ShapeSpec.{field_name} must be a positive int, got {value!r}.")


def check_positive_sizes(owner: str, **sizes: int | Sequence[int]) -> None:
    """One ``ValueError`` naming every size of a layer's constructor, if any is not positive.

    ``sizes`` are channel counts or lists of them (``conv_dims=(256, 256)``), by argument name:
    ``check_positive_sizes("MaskRCNNConvUpsampleHead", in_channels=256, conv_dims=(256,) * 4)``.
    """
    values = [
        v for size in sizes.values() for v in (size if isinstance(size, Sequence) else [size])
    ]
    if all(v > 0 for v in values):
        return
    names = list(sizes)
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    shown = ", ".join(
        f"{name}={tuple(size) if isinstance(size, Sequence) else size}"
        for name, size in sizes.items()
    )
    raise ValueError(f"{owner} needs positive {listed}, got {shown}.")
