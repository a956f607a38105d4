"""Load COCO-format json files into lazydet's per-image records.

Each record (one per image, in the json's image order)::

    {"file_name": str (image_root joined with the json's file_name), "height": int, "width": int,
     "image_id": int, "annotations": [
        {"id": int,                      # the json annotation id
         "bbox": (x0, y0, x1, y1),       # XYXY absolute pixels (the json's XYWH converted)
         "category_id": int,             # CONTIGUOUS id in 0..K-1 (sorted json category ids)
         "iscrowd": 0 | 1,
         "segmentation": list[np.ndarray float64 [2P]]   # polygons, flat x0,y0,x1,y1,...
                         | {"size": [h, w], "counts": str | bytes},  # compressed RLE
         "keypoints": np.ndarray float32 [K, 3],  # (x, y, visibility); see below
        }, ...]}

``segmentation`` and ``keypoints`` are present only when the json has them. Uncompressed RLE is
converted to compressed RLE with pycocotools. Keypoint coordinates: COCO stores integer pixel
indices; like Detectron2 we add 0.5 to labelled keypoints (v > 0) so they live in the same
continuous coordinates as boxes and polygons (the evaluator must subtract 0.5 when it writes COCO
results). Unlabelled keypoints (v == 0) stay at (0, 0).

The json is parsed with an ``object_hook`` that turns each polygon into a float64 array as soon as
its annotation is parsed, so the peak memory is the compact form plus one annotation, not the whole
tree of Python floats (32 bytes per coordinate) that ``json.load`` would otherwise build.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..annotation_checks import check_keypoints, check_polygons, polygon_array
from ..catalog import DatasetCatalog, MetadataCatalog
from ..rle import check_rle

__all__ = ["CocoLoader", "load_coco_json", "register_coco"]

logger = logging.getLogger(__name__)


def _compact_json_object(obj: dict) -> dict:
    """json ``object_hook``: shrink annotation polygons right after they are parsed."""
    segmentation = obj.get("segmentation")
    if segmentation.__class__ is list and "category_id" in obj:
        # A plain try (not contextlib.suppress): this runs once per annotation, ~1M times.
        try:  # noqa: SIM105
            obj["segmentation"] = [polygon_array(p) for p in segmentation]
        except (TypeError, ValueError):
            pass  # left as parsed; validation below reports the annotation by id
    return obj


class _InvalidAnnotation(Exception):
    """Raised inside the conversion loop; carries the reason for one annotation."""


def _convert_segmentation(segmentation: Any, height: int, width: int) -> Any:
    if isinstance(segmentation, dict):
        # Before pycocotools reads the counts: it trusts them (see lazydet.data.rle).
        check_rle(segmentation, height, width)
        if isinstance(segmentation["counts"], list):
            from pycocotools import mask as mask_util

            return mask_util.frPyObjects(segmentation, height, width)
        return {"size": [height, width], "counts": segmentation["counts"]}
    if not isinstance(segmentation, list):
        raise _InvalidAnnotation(f"segmentation of type {type(segmentation).__name__}")
    return check_polygons(segmentation)


def _is_id(value: Any) -> bool:
    """A json id: an int or a non-empty string (``True`` would silently equal id 1)."""
    return (type(value) is int) or (isinstance(value, str) and value != "")


def _positive_int(value: Any) -> int | None:
    """``value`` as an int if it is a positive integral number (``480.0`` included), else None."""
    if type(value) is int:
        return value if value > 0 else None
    if type(value) is float and value.is_integer() and value > 0:
        return int(value)
    return None


def _parse_categories(categories: Any, json_file: str) -> list[dict]:
    """The category entries sorted by id, each checked for a unique int ``id`` and a ``name``."""
    if not isinstance(categories, list):
        raise ValueError(
            f"{json_file}: 'categories' must be a list, got {type(categories).__name__}"
        )
    by_id: dict[int, dict] = {}
    for index, category in enumerate(categories):
        where = f"{json_file}: categories[{index}]"
        if not isinstance(category, dict):
            raise ValueError(
                f"{where} is a {type(category).__name__}, not an object (fix the json)"
            )
        category_id = category.get("id")
        if type(category_id) is not int:
            raise ValueError(
                f"{where} has {'no id' if category_id is None else f'id {category_id!r}'}; "
                "every category needs an integer 'id' and a 'name' (fix the json)"
            )
        name = category.get("name")
        if not isinstance(name, str):
            raise ValueError(
                f"{where} (id={category_id}) has {'no name' if name is None else f'name {name!r}'};"
                " every category needs an integer 'id' and a string 'name' (fix the json)"
            )
        if category_id in by_id:
            # Two classes on one id would make the class map depend on the json's order.
            raise ValueError(
                f"{where}: category id {category_id} is used twice (by {by_id[category_id]['name']!r}"
                f" and {name!r}); category ids must be unique (fix the json)"
            )
        by_id[category_id] = category
    return [by_id[i] for i in sorted(by_id)]


def _image_record(image: Any, index: int, json_file: str, image_root: str) -> dict:
    """The record of one json ``images`` entry, checked for ``id``, ``file_name`` and the size."""
    where = f"{json_file}: images[{index}]"
    if not isinstance(image, dict):
        raise ValueError(f"{where} is a {type(image).__name__}, not an object (fix the json)")
    image_id = image.get("id")
    if not _is_id(image_id):
        raise ValueError(
            f"{where} has {'no id' if image_id is None else f'id {image_id!r}'}; every image "
            "needs an 'id' (an integer or a string), a 'file_name', a 'height' and a 'width' "
            "(fix the json)"
        )
    where += f" (id={image_id!r})"
    file_name = image.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise ValueError(
            f"{where} has {'no file_name' if file_name is None else f'file_name {file_name!r}'};"
            " give the image's path relative to the image root (fix the json)"
        )
    size = {}
    for key in ("height", "width"):
        size[key] = _positive_int(image.get(key))
        if size[key] is None:
            value = image.get(key)
            raise ValueError(
                f"{where} has {f'no {key}' if value is None else f'{key} {value!r}'}; it must be "
                "the image's size in pixels, a positive integer (fix the json)"
            )
    return {
        "file_name": os.path.join(image_root, file_name),
        "height": size["height"],
        "width": size["width"],
        "image_id": image_id,
        "annotations": [],
    }


def load_coco_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    dataset_name: str | None = None,
    filter_invalid: bool = False,
) -> list[dict]:
    """Read a COCO-format json into per-image records (format in the module docstring).

    Args:
        json_file: path of the COCO json.
        image_root: directory the json's ``file_name`` entries are relative to.
        dataset_name: when given, ``MetadataCatalog.get(dataset_name)`` receives
            ``thing_classes``, ``thing_dataset_id_to_contiguous_id`` and its inverse
            ``thing_contiguous_id_to_dataset_id``, ``keypoint_names`` (if any),
            ``json_file``, ``image_root`` and ``evaluator_type="coco"``.
        filter_invalid: an invalid annotation (negative, NaN or non-numeric box, unknown category
            or image id, duplicated annotation id, keypoint array of the wrong length, malformed
            polygon, RLE whose run lengths do not cover the image exactly) raises a
            ``ValueError`` naming the file and annotation id; with ``filter_invalid=True`` such
            annotations are dropped instead and their count is logged as a warning.

    Problems of the file itself always raise a ``ValueError`` naming the file and the entry: not
    UTF-8, not a json object with ``images``/``annotations``/``categories`` lists, an image
    without a valid ``id``/``file_name``/``height``/``width``, a duplicated image id, a category
    without an integer ``id`` or a ``name``, a duplicated category id.
    """
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root)
    if not os.path.isfile(json_file):
        if os.path.exists(json_file):  # a directory or a FIFO (which would block json.load)
            raise ValueError(f"COCO json {json_file!r} is not a regular file; give the json's path")
        raise FileNotFoundError(f"COCO json {json_file!r} does not exist")
    # Parsing builds ~10 million small acyclic objects; the cyclic garbage collector would
    # rescan them again and again as they survive collections (measured: ~25% of the time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_coco_json(json_file, image_root, dataset_name, filter_invalid)
    finally:
        if gc_was_enabled:
            gc.enable()


def _load_coco_json(
    json_file: str, image_root: str, dataset_name: str | None, filter_invalid: bool
) -> list[dict]:
    with open(json_file, "rb") as f:
        try:
            data = json.load(f, object_hook=_compact_json_object)
        except json.JSONDecodeError as e:
            raise ValueError(f"{json_file} is not valid json: {e}") from e
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{json_file} is not UTF-8 text ({e.reason} at byte {e.start}); json must be "
                "UTF-8: re-encode the file (e.g. `iconv -f latin1 -t utf-8`)"
            ) from None
        except RecursionError:
            raise ValueError(f"{json_file} nests too deeply to be a COCO json") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{json_file} holds a json {type(data).__name__}, not an object with 'images', "
            "'annotations' and 'categories'; it is not a COCO detection json"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{json_file} has no {key!r} list; it is not a COCO detection json")
        if not isinstance(data[key], list):
            raise ValueError(f"{json_file}: {key!r} must be a list, got {type(data[key]).__name__}")

    categories = _parse_categories(data["categories"], json_file)
    dataset_id_to_contiguous = {c["id"]: i for i, c in enumerate(categories)}
    thing_classes = [c["name"] for c in categories]
    keypoint_names: list[str] | None = None
    for c in categories:
        if c.get("keypoints"):
            if keypoint_names is not None and list(c["keypoints"]) != keypoint_names:
                raise ValueError(
                    f"{json_file}: categories declare different keypoint lists; lazydet expects "
                    "one keypoint list shared by all categories"
                )
            keypoint_names = list(c["keypoints"])
    num_keypoints = len(keypoint_names) if keypoint_names else 0

    records: list[dict] = []
    record_by_image_id: dict[Any, dict] = {}
    for index, image in enumerate(data["images"]):
        record = _image_record(image, index, json_file, image_root)
        if record["image_id"] in record_by_image_id:
            raise ValueError(
                f"{json_file}: image id {record['image_id']!r} appears twice in 'images' "
                f"(images[{index}] and an earlier entry); image ids must be unique (fix the json)"
            )
        record_by_image_id[record["image_id"]] = record
        records.append(record)
    del data["images"]

    dropped: Counter[str] = Counter()
    first_dropped: dict[str, Any] = {}
    seen_annotation_ids: set[Any] = set()
    annotations = data.pop("annotations")
    # Consume the list from the front so the parsed dicts are freed as we go.
    annotations.reverse()
    while annotations:
        ann = annotations.pop()
        if not isinstance(ann, dict):
            raise ValueError(
                f"{json_file}: an entry of 'annotations' is a {type(ann).__name__}, not an "
                "object (fix the json)"
            )
        ann_id = ann.get("id")
        try:
            if ann_id is not None:
                if ann_id in seen_annotation_ids:
                    raise _InvalidAnnotation(
                        "the annotation id is used twice (annotation ids must be unique)"
                    )
                seen_annotation_ids.add(ann_id)
            # type checks: True == 1 in a dict lookup, so a bool id would find image / class 1.
            image_id = ann.get("image_id")
            record = record_by_image_id.get(image_id) if _is_id(image_id) else None
            if record is None:
                raise _InvalidAnnotation(f"unknown image_id {image_id!r}")
            category_id = ann.get("category_id")
            category = (
                dataset_id_to_contiguous.get(category_id) if type(category_id) is int else None
            )
            if category is None:
                raise _InvalidAnnotation(
                    f"unknown category_id {ann.get('category_id')!r} (categories: "
                    f"{sorted(dataset_id_to_contiguous)})"
                )
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise _InvalidAnnotation(f"bbox must be [x, y, w, h], got {bbox!r}")
            if any(type(v) not in (int, float) for v in bbox):  # no bools, no strings
                raise _InvalidAnnotation(f"bbox values must be numbers, got {bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            if not all(map(math.isfinite, (x, y, w, h))):
                raise _InvalidAnnotation(f"bbox has a NaN or infinite value: {bbox}")
            if w < 0 or h < 0:
                raise _InvalidAnnotation(f"bbox has a negative width or height: {bbox}")
            out = {
                "id": ann_id,
                "bbox": (x, y, x + w, y + h),
                "category_id": category,
                "iscrowd": ann.get("iscrowd", 0),
            }
            if out["iscrowd"] not in (0, 1):
                raise _InvalidAnnotation(f"iscrowd must be 0 or 1, got {out['iscrowd']!r}")
            out["iscrowd"] = int(out["iscrowd"])
            segmentation = ann.get("segmentation")
            if segmentation:
                out["segmentation"] = _convert_segmentation(
                    segmentation, record["height"], record["width"]
                )
            keypoints = ann.get("keypoints")
            if keypoints is not None:
                if len(keypoints) != 3 * num_keypoints:
                    raise _InvalidAnnotation(
                        f"keypoints has {len(keypoints)} values; the categories declare "
                        f"{num_keypoints} keypoints, so 3 x {num_keypoints} = {3 * num_keypoints} "
                        "are expected"
                    )
                if num_keypoints:
                    kp = check_keypoints(keypoints, num_keypoints)
                    labelled = kp[:, 2] > 0
                    kp[labelled, :2] += 0.5  # pixel index -> continuous coordinate
                    out["keypoints"] = kp
        except (_InvalidAnnotation, TypeError, ValueError) as e:
            if not filter_invalid:
                raise ValueError(
                    f"{json_file}: annotation id={ann_id!r} (image_id={ann.get('image_id')!r}) "
                    f"is invalid: {e}. Fix the annotation, or load with filter_invalid=True to "
                    "drop invalid annotations."
                ) from None
            reason = str(e)
            dropped[reason] += 1
            first_dropped.setdefault(reason, ann_id)
            continue
        record["annotations"].append(out)

    if dropped:
        details = "; ".join(
            f"{n} x {reason} (e.g. annotation id={first_dropped[reason]!r})"
            for reason, n in dropped.most_common()
        )
        logger.warning(
            "%s: dropped %d invalid annotations: %s", json_file, sum(dropped.values()), details
        )

    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.set(
            thing_classes=thing_classes,
            thing_dataset_id_to_contiguous_id=dataset_id_to_contiguous,
            thing_contiguous_id_to_dataset_id={i: d for d, i in dataset_id_to_contiguous.items()},
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
        )
        if keypoint_names:
            meta.keypoint_names = keypoint_names
    logger.info("loaded %d images from %s", len(records), json_file)
    return records


@dataclass(frozen=True)
class CocoLoader:
    """Picklable, comparable loader registered by :func:`register_coco`.

    Being a frozen dataclass (not a lambda or partial) makes two registrations of the same
    json compare equal, so a config that registers its dataset can be executed twice.
    """

    dataset_name: str
    json_file: str
    image_root: str
    filter_invalid: bool = False
    missing_hint: str = field(default="", compare=False)

    def __call__(self) -> list[dict]:
        if not os.path.exists(self.json_file):
            raise FileNotFoundError(
                f"dataset {self.dataset_name!r}: annotation file {self.json_file!r} does not "
                f"exist. {self.missing_hint}".rstrip()
            )
        return load_coco_json(
            self.json_file,
            self.image_root,
            dataset_name=self.dataset_name,
            filter_invalid=self.filter_invalid,
        )


def register_coco(
    name: str,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    *,
    filter_invalid: bool = False,
) -> str:
    """Register a COCO-format dataset under ``name`` and return ``name``.

    Returning the name lets a config write ``dataset=L(register_coco)(name=..., json_file=...,
    image_root=...)`` wherever a dataset name is expected. ``metadata`` (e.g. ``keypoint_flip_map``,
    ``keypoint_oks_sigmas``) is stored in ``MetadataCatalog.get(name)``; class names and the id
    mapping are filled from the json when it is loaded. Registering the same arguments again is a
    no-op; different arguments under a taken name raise ``ValueError``.
    """
    loader = CocoLoader(
        dataset_name=name,
        json_file=os.path.abspath(os.fspath(json_file)),
        image_root=os.path.abspath(os.fspath(image_root)),
        filter_invalid=filter_invalid,
    )
    DatasetCatalog.register(name, loader)
    meta = MetadataCatalog.get(name)
    meta.set(json_file=loader.json_file, image_root=loader.image_root, evaluator_type="coco")
    if metadata:
        meta.set(**dict(metadata))
    return name
