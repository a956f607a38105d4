"""Built-in dataset names, registered when ``lazydet.data`` is imported.

COCO and VOC live under ``$LAZYDET_DATASETS`` (default ``./datasets``), read when the data is
loaded, not at import, so the variable can be set after ``import lazydet``::

    $LAZYDET_DATASETS/coco/annotations/instances_{train,val}2017.json
    $LAZYDET_DATASETS/coco/annotations/person_keypoints_{train,val}2017.json
    $LAZYDET_DATASETS/coco/{train,val}2017/*.jpg
    $LAZYDET_DATASETS/VOC2007/{Annotations,ImageSets,JPEGImages}
    $LAZYDET_DATASETS/VOC2012/{Annotations,ImageSets,JPEGImages}

``shapes_train`` / ``shapes_val`` are generated into ``$LAZYDET_CACHE`` (default
``~/.cache/lazydet``) on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json
from .shapes import SHAPES_SPLITS, register_shapes
from .voc import VOC_CLASSES, load_voc_instances

__all__ = [
    "COCO_KEYPOINT_FLIP_MAP",
    "COCO_KEYPOINT_NAMES",
    "COCO_KEYPOINT_OKS_SIGMAS",
    "COCO_THING_CLASSES",
    "COCO_THING_DATASET_IDS",
    "datasets_root",
    "register_all_builtin",
]

# (json category id, name) of the 80 COCO "thing" categories.
_COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"),
    (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"),
    (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"),
    (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip
COCO_THING_DATASET_IDS = tuple(i for i, _ in _COCO_CATEGORIES)
COCO_THING_CLASSES = tuple(name for _, name in _COCO_CATEGORIES)

COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_KEYPOINT_FLIP_MAP = tuple(
    (f"left_{part}", f"right_{part}")
    for part in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
)
# Per-keypoint OKS sigmas used by the official COCO keypoint evaluation.
COCO_KEYPOINT_OKS_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip

_MISSING_HINT = (
    "lazydet looks for datasets under $LAZYDET_DATASETS (now {root!r}); set LAZYDET_DATASETS to "
    "the directory that contains {subdir!r} (see docs/data.md for the expected layout)."
)


def datasets_root() -> Path:
    """``$LAZYDET_DATASETS`` if set, else ``./datasets`` (resolved at call time)."""
    return Path(os.environ.get("LAZYDET_DATASETS") or "datasets").absolute()


def _missing(dataset_name: str, path: Path, root: Path, subdir: str) -> FileNotFoundError:
    """The error for a builtin dataset whose ``path`` (under ``root``/``subdir``) is absent."""
    return FileNotFoundError(
        f"dataset {dataset_name!r}: {path} does not exist. "
        + _MISSING_HINT.format(root=str(root), subdir=subdir)
    )


@dataclass(frozen=True)
class BuiltinCocoLoader:
    """Loads ``<root>/<json_relpath>`` with images in ``<root>/<image_relpath>``."""

    dataset_name: str
    json_relpath: str
    image_relpath: str

    def __call__(self) -> list[dict]:
        root = datasets_root()
        json_file = root / self.json_relpath
        if not json_file.is_file():
            raise _missing(self.dataset_name, json_file, root, self.json_relpath.split("/")[0])
        records = load_coco_json(json_file, root / self.image_relpath)
        MetadataCatalog.get(self.dataset_name).replace(
            json_file=str(json_file), image_root=str(root / self.image_relpath)
        )
        return records


@dataclass(frozen=True)
class BuiltinVocLoader:
    dataset_name: str
    subdir: str
    split: str

    def __call__(self) -> list[dict]:
        root = datasets_root()
        dirname = root / self.subdir
        if not dirname.is_dir():
            raise _missing(self.dataset_name, dirname, root, self.subdir)
        MetadataCatalog.get(self.dataset_name).replace(dirname=str(dirname))
        return load_voc_instances(dirname, self.split, VOC_CLASSES)


def _coco_metadata(keypoints: bool) -> dict:
    meta = {
        "thing_classes": list(COCO_THING_CLASSES),
        "thing_dataset_id_to_contiguous_id": {d: i for i, d in enumerate(COCO_THING_DATASET_IDS)},
        "thing_contiguous_id_to_dataset_id": dict(enumerate(COCO_THING_DATASET_IDS)),
        "evaluator_type": "coco",
    }
    if keypoints:
        meta.update(
            thing_classes=["person"],
            thing_dataset_id_to_contiguous_id={1: 0},
            thing_contiguous_id_to_dataset_id={0: 1},
            keypoint_names=list(COCO_KEYPOINT_NAMES),
            keypoint_flip_map=list(COCO_KEYPOINT_FLIP_MAP),
            keypoint_oks_sigmas=list(COCO_KEYPOINT_OKS_SIGMAS),
        )
    return meta


def register_all_builtin() -> None:
    """Register the built-in names (idempotent)."""
    for split in ("train", "val"):
        for prefix, json_name, keypoints in (
            ("coco", "instances", False),
            ("keypoints_coco", "person_keypoints", True),
        ):
            name = f"{prefix}_2017_{split}"
            DatasetCatalog.register(
                name,
                BuiltinCocoLoader(
                    name, f"coco/annotations/{json_name}_{split}2017.json", f"coco/{split}2017"
                ),
            )
            MetadataCatalog.get(name).set(**_coco_metadata(keypoints))
    for name, subdir, split, year in (
        ("voc_2007_trainval", "VOC2007", "trainval", 2007),
        ("voc_2007_test", "VOC2007", "test", 2007),
        ("voc_2012_trainval", "VOC2012", "trainval", 2012),
    ):
        DatasetCatalog.register(name, BuiltinVocLoader(name, subdir, split))
        MetadataCatalog.get(name).set(
            thing_classes=list(VOC_CLASSES), split=split, year=year, evaluator_type="pascal_voc"
        )
    for split, spec in SHAPES_SPLITS.items():
        register_shapes(f"shapes_{split}", **spec)
