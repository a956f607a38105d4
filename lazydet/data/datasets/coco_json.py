"""A COCO json of your own as the ``dataset`` group's option ``coco_json``.

``conf/dataset/coco_json.py`` names its datasets and sizes the heads through three OmegaConf
resolvers, registered when ``lazydet.data`` is imported::

    train="${coco_json.dataset:train,${dataset.train_json},${dataset.train_images}}"
    num_classes="${coco_json.num_classes:${dataset.train_json}}"
    num_keypoints="${coco_json.num_keypoints:${dataset.train_json}}"

Resolving ``coco_json.dataset`` registers the json with :func:`register_coco` under its absolute
path (the dataset's name) together with the metadata its categories give, and returns the name;
registering is idempotent, so every process that resolves the config (validation, each DDP rank,
``lazydet.evaluate`` on a saved run) registers the same dataset. The metadata is known before the
images are loaded, so ``flip_indices_from_metadata`` and the heads' sizes work at build time.

Metadata read from the json's ``categories`` (sorted by id, as :func:`load_coco_json` does):
``thing_classes``, the id mappings, and where a category has ``keypoints``: ``keypoint_names``,
``keypoint_skeleton`` (its 1-based ``skeleton`` as pairs of names) and ``keypoint_flip_map``:
the pairs of names that differ only by ``left`` <-> ``right`` (``left_eye``/``right_eye``,
``eye_left``/``eye_right``, ``LeftEye``/``RightEye``). A json is read once per process for its
categories (cached by path, size and modification time).
"""

from __future__ import annotations

import json
import logging
import os
import re
from functools import lru_cache
from typing import Any

from .coco import _parse_categories, register_coco

__all__ = [
    "coco_json_dataset",
    "coco_json_metadata",
    "keypoint_flip_map_from_names",
    "register_coco_json_resolvers",
]

logger = logging.getLogger(__name__)

_SIDE = re.compile(r"left|Left|LEFT")
_OTHER_SIDE = {"left": "right", "Left": "Right", "LEFT": "RIGHT"}


def keypoint_flip_map_from_names(names: list[str]) -> list[tuple[str, str]]:
    """Pairs ``(left name, right name)`` of keypoint names that differ only by the word
    left <-> right (any of ``left``, ``Left``, ``LEFT``), in the order of the left names."""
    present = set(names)
    pairs = []
    for name in names:
        for match in _SIDE.finditer(name):
            other = name[: match.start()] + _OTHER_SIDE[match.group()] + name[match.end() :]
            if other in present and other != name:
                pairs.append((name, other))
                break
    return pairs


def _check_json_argument(value: Any, key: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(
            f"{key} is not set; give the path of your COCO json: {key}=/path/to/annotations.json"
        )
    path = os.path.abspath(os.path.expanduser(os.fspath(value)))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{key}={value!r}: no such file ({path}); give the path of your COCO json"
        )
    return path


@lru_cache(maxsize=16)
def _read_metadata(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, Any], ...]:
    """The metadata of ``path`` (``size``/``mtime_ns`` only key the cache)."""
    with open(path, "rb") as f:
        try:
            data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a valid UTF-8 json file: {e}") from None
    if not isinstance(data, dict) or "categories" not in data:
        raise ValueError(f"{path} has no 'categories' list; it is not a COCO detection json")
    categories = _parse_categories(data["categories"], path)
    if not categories:
        raise ValueError(f"{path}: 'categories' is empty; a detector needs at least one class")
    ids = [c["id"] for c in categories]
    meta: dict[str, Any] = {
        # The same types as load_coco_json sets, so loading the images later agrees with these.
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {d: i for i, d in enumerate(ids)},
        "thing_contiguous_id_to_dataset_id": dict(enumerate(ids)),
    }
    with_keypoints = [c for c in categories if c.get("keypoints")]
    if with_keypoints:
        names = list(with_keypoints[0]["keypoints"])
        if any(list(c["keypoints"]) != names for c in with_keypoints):
            raise ValueError(
                f"{path}: categories declare different keypoint lists; lazydet expects one "
                "keypoint list shared by all categories"
            )
        meta["keypoint_names"] = names
        meta["keypoint_flip_map"] = keypoint_flip_map_from_names(names)
        skeleton = with_keypoints[0].get("skeleton") or []
        try:
            meta["keypoint_skeleton"] = [(names[a - 1], names[b - 1]) for a, b in skeleton]
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"{path}: the skeleton of category {with_keypoints[0]['name']!r} must list pairs "
                f"of 1-based keypoint indices in 1..{len(names)}, got {skeleton!r}"
            ) from None
    return tuple(meta.items())


def coco_json_metadata(json_file: str | os.PathLike, *, key: str = "json_file") -> dict[str, Any]:
    """Class names, id mappings and keypoint metadata from a COCO json's ``categories``.

    ``key`` names the setting the path came from in error messages (``dataset.train_json``).
    """
    path = _check_json_argument(json_file, key)
    stat = os.stat(path)
    return dict(_read_metadata(path, stat.st_size, stat.st_mtime_ns))


def coco_json_dataset(role: str, json_file: Any, image_root: Any) -> str:
    """Register ``json_file`` (images under ``image_root``) with its metadata; return its name
    (the json's absolute path). ``role`` is ``train`` or ``test``: it names the settings
    ``dataset.{role}_json`` / ``dataset.{role}_images`` in error messages."""
    meta = coco_json_metadata(json_file, key=f"dataset.{role}_json")
    if image_root is None or not os.path.isdir(os.fspath(image_root)):
        raise FileNotFoundError(
            f"dataset.{role}_images={image_root!r} is not a folder; give the folder that the "
            f"file_name entries of {json_file} are relative to"
        )
    name = os.path.abspath(os.path.expanduser(os.fspath(json_file)))
    register_coco(name, name, os.path.expanduser(os.fspath(image_root)), metadata=meta)
    if meta.get("keypoint_names") and not meta["keypoint_flip_map"]:
        logger.warning(
            "%s: no keypoint names pair up as left/right (%s); a horizontal flip will keep every "
            "keypoint's name. Set MetadataCatalog.get(%r).keypoint_flip_map if some should swap.",
            name,
            ", ".join(meta["keypoint_names"][:6]),
            name,
        )
    return name


def _num_classes(json_file: Any) -> int:
    return len(coco_json_metadata(json_file, key="dataset.train_json")["thing_classes"])


def _num_keypoints(json_file: Any) -> int:
    meta = coco_json_metadata(json_file, key="dataset.train_json")
    return len(meta.get("keypoint_names") or ())


def register_coco_json_resolvers() -> None:
    """Register ``coco_json.dataset``, ``coco_json.num_classes`` and ``coco_json.num_keypoints``
    with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    for name, function in (
        ("coco_json.dataset", coco_json_dataset),
        ("coco_json.num_classes", _num_classes),
        ("coco_json.num_keypoints", _num_keypoints),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
