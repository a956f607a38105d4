"""Read a COCO results file straight into the arrays an evaluation needs (``msgspec``).

A Mask R-CNN's results file is mostly RLE text (27 of its 35 MB for 100k detections) that a bbox
evaluation never reads, yet a general JSON parser builds a Python string for each mask, a dict
for each detection and a float for each number. ``read_result_columns`` decodes the file against
a schema holding only the fields the IoU type needs (``msgspec`` skips the others without
building them) and returns the columns as arrays: ``ResultColumns``.

It is a fast path, never a second set of rules: whatever does not fit the schema exactly (a
missing field, a wrong type, ``NaN`` literals, polygons where RLE was expected, a ``bbox`` in some
detections only, invalid JSON) makes it return None, and the caller reads the file the general
way (``coco_input.load_results``), whose check names the entry at fault. Numbers are the nearest
float64 to the decimal text, as with ``orjson`` and ``json`` (``tests/evaluation/
test_results_reader.py`` holds the arrays equal to those read from the parsed file).
"""

from __future__ import annotations

import functools
import itertools
import mmap
import os
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

try:  # a core dependency; without it every file is read the general way
    import msgspec
except ImportError:  # pragma: no cover - exercised by tests that hide it
    msgspec = None

__all__ = ["ResultColumns", "read_result_columns"]


_Box = tuple[float, float, float, float]

if msgspec is not None:
    # The schemas: per IoU type only the fields it needs, plus those that decide a detection's
    # area in ``COCO.loadRes`` (the box, else the mask). Unknown fields are skipped unread.

    # gc=False: the records hold no reference cycles, so the cyclic collector need not track
    # 100k of them (~10% of the decoding time).
    class _Detection(msgspec.Struct, gc=False):
        image_id: int
        category_id: int
        score: float

    class _BoxDetection(_Detection):
        bbox: _Box

    class _RLE(
        msgspec.Struct, gc=False
    ):  # a detector's compressed RLE; other masks: the general way
        size: tuple[int, int]
        counts: str

    class _MaskDetection(_Detection):
        segmentation: _RLE
        bbox: _Box | msgspec.UnsetType = msgspec.UNSET

    class _KeypointDetection(_Detection):
        keypoints: list[float]
        bbox: _Box | msgspec.UnsetType = msgspec.UNSET
        # Only whether it is there: loadRes takes the area from a mask when there is no box.
        segmentation: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET

    _SCHEMAS = {"bbox": _BoxDetection, "segm": _MaskDetection, "keypoints": _KeypointDetection}


@functools.cache
def _decoder(iou_type: str):
    return msgspec.json.Decoder(list[_SCHEMAS[iou_type]])


class ResultColumns(Sequence):
    """Every detection's fields as arrays, in file order; a read-only sequence of result dicts.

    Attributes:
        image_id, category_id: ``[N]`` int64.
        score: ``[N]`` float64.
        bbox: ``[N, 4]`` float64 ``[x, y, w, h]``, or None when no detection has a box.
        keypoints: ``[N, 3k]`` float64 (keypoints files), else None.
        sizes: ``[N, 2]`` int64 mask ``(height, width)`` (segm), else None.
        counts: the masks' compressed RLE strings (segm), else None.

    ``columns[i]`` is detection ``i`` as a dict of these fields (what error messages and the
    engines' few per-detection reads use); ``segmentation`` the RLE dicts, built on first use.
    """

    def __init__(self, *, image_id, category_id, score, bbox=None, keypoints=None, sizes=None,
                 counts=None) -> None:  # fmt: skip
        self.image_id, self.category_id, self.score = image_id, category_id, score
        self.bbox, self.keypoints, self.sizes, self.counts = bbox, keypoints, sizes, counts

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        det: dict[str, Any] = {
            "image_id": int(self.image_id[index]),
            "category_id": int(self.category_id[index]),
            "score": float(self.score[index]),
        }
        if self.bbox is not None:
            det["bbox"] = self.bbox[index].tolist()
        if self.counts is not None:
            det["segmentation"] = self.segmentation[index]
        if self.keypoints is not None:
            det["keypoints"] = self.keypoints[index].tolist()
        return det

    @functools.cached_property
    def segmentation(self) -> list[dict] | None:
        """The masks as pycocotools' RLE dicts ``{"size": [h, w], "counts": str}``."""
        if self.counts is None:
            return None
        return [{"size": size, "counts": c} for size, c in zip(self.sizes.tolist(), self.counts)]


def read_result_columns(path: str | os.PathLike, iou_type: str) -> ResultColumns | None:
    """The detections of the results file at ``path`` as columns, or None when msgspec is
    missing or the file is not a list of detections with exactly the expected types (the caller
    then reads it with ``coco_input.load_results``, which says what is wrong)."""
    if msgspec is None:
        return None
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            # Decoded from the file's pages as they are: no copy of its 35 MB into a bytes object.
            return _decode_columns(data, iou_type)
    except (OSError, ValueError):  # unreadable, a directory, empty (the general reader says so)
        return None


def _decode_columns(data, iou_type: str) -> ResultColumns | None:
    entries = None
    try:
        entries = _decoder(iou_type).decode(data)
        return _columns(entries, iou_type)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    except (OverflowError, ValueError):  # an id past int64
        return None
    finally:
        del entries  # msgspec.Raw fields are views of the mapped file, which closes next


def _floats(rows: list, width: int) -> np.ndarray:
    flat = itertools.chain.from_iterable(rows)
    return np.fromiter(flat, np.float64, count=width * len(rows)).reshape(-1, width)


def _columns(entries: list, iou_type: str) -> ResultColumns | None:
    n = len(entries)
    out = {
        "image_id": np.fromiter(map(attrgetter("image_id"), entries), np.int64, count=n),
        "category_id": np.fromiter(map(attrgetter("category_id"), entries), np.int64, count=n),
        "score": np.fromiter(map(attrgetter("score"), entries), np.float64, count=n),
    }
    boxes = list(map(attrgetter("bbox"), entries)) if n and hasattr(entries[0], "bbox") else []
    if msgspec.UNSET in boxes:
        # Some detections have a box: loadRes reads the first one's kind for all (the general
        # check names a detection without one); none has a box: the area comes from the mask.
        if boxes.count(msgspec.UNSET) != n:
            return None
        boxes = []
    out["bbox"] = _floats(boxes, 4) if boxes else None
    if iou_type == "segm":
        masks = list(map(attrgetter("segmentation"), entries))
        out["counts"] = list(map(attrgetter("counts"), masks))
        sizes = itertools.chain.from_iterable(map(attrgetter("size"), masks))
        out["sizes"] = np.fromiter(sizes, np.int64, count=2 * n).reshape(-1, 2)
    if iou_type == "keypoints":
        if out["bbox"] is None and n and entries[0].segmentation is not msgspec.UNSET:
            return None  # loadRes would take the area from the mask: the general way
        rows = list(map(attrgetter("keypoints"), entries))
        widths = set(map(len, rows))
        if len(widths) > 1:
            return None  # the general check names the detection with the odd count
        out["keypoints"] = _floats(rows, widths.pop() if widths else 0)
    return ResultColumns(**out)
