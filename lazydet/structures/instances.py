"""``Instances``: the one per-image container of detections or ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lazydet.structures._common import IndexLike, image_size_pair, index_list, scalar_index

__all__ = ["Instances"]


class Instances:
    """Per-image fields of equal length (boxes, classes, scores, masks, keypoints, ...).

    ``Instances(image_size=(height, width), gt_boxes=Boxes(...), gt_classes=tensor)`` or set
    fields later as attributes (``instances.scores = tensor``). ``image_size`` is the size of the
    image the coordinates refer to, in pixels.

    A field can be anything with ``len()`` and ``__getitem__`` (tensors, ``Boxes``, masks,
    ``Keypoints``, Python lists). Every field must have the same length, which is
    ``len(instances)``; an ``Instances`` with no fields has length 0.
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any) -> None:
        # Bypass __setattr__: these two are the container's own state, not fields.
        object.__setattr__(
            self, "_image_size", image_size_pair(image_size, what="Instances image_size")
        )
        object.__setattr__(self, "_fields", {})
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self._image_size

    # ----------------------------------------------------------------------------------------
    # Fields as attributes
    # ----------------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        elif name == "image_size":
            raise AttributeError(
                "Instances.image_size is fixed at construction; build a new Instances instead."
            )
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for fields (and for missing names).
        fields = self.__dict__.get("_fields")
        if fields is None or name not in fields:
            known = ", ".join(sorted(fields)) if fields else "none"
            raise AttributeError(f"Instances has no field {name!r} (fields: {known}).")
        return fields[name]

    def __delattr__(self, name: str) -> None:
        if name in self._fields:
            self.remove(name)
        else:
            object.__delattr__(self, name)

    def set(self, name: str, value: Any) -> None:
        """Add or replace field ``name``; its length must equal the other fields' length."""
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(
                f"Instances field name {name!r} must be an identifier not starting with '_'."
            )
        if name == "image_size":
            raise ValueError(
                "'image_size' is reserved for the image size; pick another field name."
            )
        try:
            length = len(value)
        except TypeError:
            raise TypeError(
                f"Instances field {name!r} must have a length (a tensor, Boxes, masks, list...), "
                f"got {type(value).__name__}."
            ) from None
        other_fields = [other for other in self._fields if other != name]
        if other_fields:
            expected = len(self._fields[other_fields[0]])
            if length != expected:
                raise ValueError(
                    f"Instances field {name!r} has length {length}, but the other fields "
                    f"({', '.join(other_fields)}) have length {expected}."
                )
        self._fields[name] = value

    def get(self, name: str) -> Any:
        """Value of field ``name`` (KeyError naming the known fields when absent)."""
        if name not in self._fields:
            known = ", ".join(sorted(self._fields)) or "none"
            raise KeyError(f"Instances has no field {name!r} (fields: {known}).")
        return self._fields[name]

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        """Delete field ``name`` (KeyError naming the known fields when absent)."""
        if name not in self._fields:
            known = ", ".join(sorted(self._fields)) or "none"
            raise KeyError(f"Instances has no field {name!r} to remove (fields: {known}).")
        del self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """A new dict ``{name: value}`` of the fields, in insertion order (values not copied)."""
        return dict(self._fields)

    # ----------------------------------------------------------------------------------------
    # Container protocol
    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        return 0

    def __getitem__(self, item: IndexLike) -> Instances:
        """Select instances in every field. An ``int`` returns a length-1 ``Instances``."""
        position = scalar_index(item)
        if position is not None:
            length = len(self)
            if not -length <= position < length:
                raise IndexError(f"Instances index {position} out of range for length {length}.")
            # A one-element slice keeps every field a container (a Boxes, not a [4] row).
            position %= length
            item = slice(position, position + 1)
        selected = Instances(self._image_size)
        for name, value in self._fields.items():
            if isinstance(value, list):
                selected._fields[name] = index_list(value, item, what=f"Instances field {name!r}")
            else:
                selected._fields[name] = value[item]
        return selected

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """``Tensor.to`` on every field that has a ``.to`` method (others are shared as they are)."""
        moved = Instances(self._image_size)
        for name, value in self._fields.items():
            moved._fields[name] = value.to(*args, **kwargs) if hasattr(value, "to") else value
        return moved

    @staticmethod
    def cat(instances_list: Sequence[Instances]) -> Instances:
        """Concatenate ``Instances`` of one image (same ``image_size``, same field names).

        Tensors are joined with ``torch.cat``, lists are chained, and other field types with
        their own ``type(value).cat(list)`` (``Boxes``, ``BitMasks``, ``Keypoints``, ...).
        """
        if not isinstance(instances_list, (list, tuple)) or len(instances_list) == 0:
            raise ValueError("Instances.cat expects a non-empty list of Instances.")
        for index, instances in enumerate(instances_list):
            if not isinstance(instances, Instances):
                raise TypeError(
                    f"Instances.cat: element {index} is a {type(instances).__name__}, not Instances."
                )
        first = instances_list[0]
        for index, instances in enumerate(instances_list[1:], start=1):
            if instances.image_size != first.image_size:
                raise ValueError(
                    f"Instances.cat: element {index} has image_size {instances.image_size}, "
                    f"element 0 has {first.image_size}; only instances of one image can be joined."
                )
            if set(instances._fields) != set(first._fields):
                missing = sorted(set(first._fields) - set(instances._fields))
                extra = sorted(set(instances._fields) - set(first._fields))
                raise ValueError(
                    f"Instances.cat: element {index} has different fields than element 0 "
                    f"(missing: {missing}, extra: {extra})."
                )
        joined = Instances(first.image_size)
        for name, value in first._fields.items():
            values = [instances._fields[name] for instances in instances_list]
            if isinstance(value, Tensor):
                joined._fields[name] = torch.cat(values, dim=0)
            elif isinstance(value, list):
                joined._fields[name] = [element for part in values for element in part]
            elif hasattr(type(value), "cat"):
                joined._fields[name] = type(value).cat(values)
            else:
                raise TypeError(
                    f"Instances.cat: field {name!r} of type {type(value).__name__} cannot be "
                    "concatenated; give the type a classmethod cat(list) or store a tensor/list."
                )
        return joined

    def __repr__(self) -> str:
        height, width = self._image_size
        return (
            f"Instances(num_instances={len(self)}, image_height={height}, image_width={width}, "
            f"fields=[{', '.join(self._fields)}])"
        )
