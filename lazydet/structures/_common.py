"""Indexing and validation rules shared by the structures (private).

Every structure accepts the same selections: an int (giving a length-1 container, never a bare
row), a slice, a bool mask of length N, or a 1-D integer index. Tensors implement these
natively; the helpers here give the same behaviour to Python lists (Instances list fields,
PolygonMasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

# What __getitem__ of the structures accepts.
IndexLike = int | slice | Tensor | Sequence[int] | Sequence[bool] | np.ndarray


def scalar_index(item: Any) -> int | None:
    """``item`` as a Python int when it selects one element (int, numpy int, 0-d integer tensor).

    Returns None for slices, masks and index lists.
    """
    if isinstance(item, bool):
        return None
    if isinstance(item, (int, np.integer)):
        return int(item)
    if (
        isinstance(item, Tensor)
        and item.dim() == 0
        and not item.is_floating_point()
        and item.dtype != torch.bool
    ):
        return int(item)
    return None


def index_list(values: Sequence[Any], item: Any, *, what: str) -> list[Any]:
    """Select from a Python list the way a 1-D tensor would be indexed; ``what`` names the owner."""
    length = len(values)
    position = scalar_index(item)
    if position is not None:
        if not -length <= position < length:
            raise IndexError(f"{what} index {position} out of range for length {length}.")
        return [values[position]]
    if isinstance(item, slice):
        return list(values[item])
    positions = item if isinstance(item, Tensor) else torch.as_tensor(np.asarray(item))
    if positions.dim() != 1 or positions.is_floating_point():
        raise IndexError(
            f"{what} can be indexed by an int, a slice, a bool mask or a 1-D integer index, "
            f"got {positions.dtype} of shape {tuple(positions.shape)}."
        )
    if positions.dtype == torch.bool:
        if positions.numel() != length:
            raise IndexError(
                f"{what}: bool mask of length {positions.numel()} for {length} elements."
            )
        positions = positions.nonzero().flatten()
    selected = []
    for position in positions.tolist():
        if not -length <= position < length:
            raise IndexError(f"{what} index {position} out of range for length {length}.")
        selected.append(values[position])
    return selected


def image_size_pair(image_size: Any, *, what: str) -> tuple[int, int]:
    """Validate an ``(height, width)`` pair of non-negative integers."""
    try:
        height, width = image_size
        height, width = int(height), int(width)
    except (TypeError, ValueError):
        raise ValueError(
            f"{what} must be a (height, width) pair of ints, got {image_size!r}."
        ) from None
    if height < 0 or width < 0:
        raise ValueError(f"{what} must be non-negative, got {image_size!r}.")
    return height, width
