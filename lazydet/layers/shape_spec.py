"""``ShapeSpec``: what a feature map is before any input is seen (channels and stride).

Backbones describe their outputs with ``output_shape() -> dict[str, ShapeSpec]``; heads size
themselves from it when the model is built, so configs never repeat a channel count or a stride.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShapeSpec"]


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
