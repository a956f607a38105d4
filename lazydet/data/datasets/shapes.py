"""``shapes``: a small synthetic detection / segmentation / keypoint dataset, generated on demand.

Each image (default 128x128 RGB PNG) shows 1-5 shapes -- circle, square (rotated), triangle
(rotated) -- in random sizes and colours on a textured background (noise, a linear gradient or
stripes). Later shapes are drawn over earlier ones; each annotation's mask is the *visible* part
(an RLE in the COCO json), its box is the tight box of that mask, and a placement that would hide
more than half of an earlier shape is rejected, so every instance stays recognisable.

Every shape carries 4 keypoints, its extreme points ``top``, ``right``, ``bottom``, ``left``
(for a flat edge, the edge's midpoint); ``left``/``right`` swap under a horizontal flip. A keypoint
hidden by a later shape has visibility 1, otherwise 2. Keypoints are written in COCO's pixel-index
convention (continuous coordinate - 0.5), so the COCO loader's +0.5 puts them back on the shape.

The dataset is written as real files (PNG images + a COCO json) so the regular COCO loading and
mapping code is what reads it. Generation is deterministic for a given (num_images, image_size,
seed) and atomic: it is written to a staging directory that is renamed into place at the end.
A lock file per split (``flock``) lets one process generate while others wait, and lets the next
generator remove the staging directory of one that was killed. Files and directories get the
usual permissions under the process umask (typically readable by all), so a ``LAZYDET_CACHE``
can be shared between users.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json

try:
    import fcntl
except ImportError:  # not POSIX: no locking, generation stays atomic but may run twice
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_KEYPOINT_FLIP_MAP",
    "SHAPES_KEYPOINT_NAMES",
    "SHAPES_SPLITS",
    "ShapesLoader",
    "generate_shapes",
    "lazydet_cache_dir",
    "register_shapes",
    "shapes_split_dir",
]

SHAPES_CLASSES = ("circle", "square", "triangle")
SHAPES_KEYPOINT_NAMES = ("top", "right", "bottom", "left")
SHAPES_KEYPOINT_FLIP_MAP = (("left", "right"),)
# OKS sigmas: extreme points of simple shapes are well defined, about like COCO's eyes/nose.
SHAPES_KEYPOINT_OKS_SIGMAS = (0.025, 0.025, 0.025, 0.025)
# Version of the generator; bump it when the output changes so stale caches are not reused.
_GENERATOR_VERSION = 1
logger = logging.getLogger(__name__)

SHAPES_SPLITS = {
    "train": {"num_images": 400, "image_size": 128, "seed": 0},
    "val": {"num_images": 100, "image_size": 128, "seed": 1},
}


def lazydet_cache_dir() -> Path:
    """``$LAZYDET_CACHE`` if set, else ``~/.cache/lazydet``."""
    return Path(os.environ.get("LAZYDET_CACHE") or Path.home() / ".cache" / "lazydet")


@dataclass
class _Shape:
    category: int  # index into SHAPES_CLASSES
    center: tuple[float, float]
    radius: float
    vertices: (
        np.ndarray | None
    )  # [V, 2] for polygons (counter-clockwise in image coords), None for circles

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean of the broadcast shape of x, y: is the continuous point inside (edges included)."""
        cx, cy = self.center
        if self.vertices is None:
            return (x - cx) ** 2 + (y - cy) ** 2 <= self.radius**2
        inside = np.ones(np.broadcast(x, y).shape, dtype=bool)
        v = self.vertices
        for i in range(len(v)):
            (x0, y0), (x1, y1) = v[i], v[(i + 1) % len(v)]
            # Same side of every edge as the centre (the polygon is convex).
            side = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
            centre_side = (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
            inside &= side * np.sign(centre_side) >= 0
        return inside

    def extreme_points(self) -> np.ndarray:
        """[4, 2] continuous (x, y) of the top, right, bottom, left extreme points."""
        cx, cy = self.center
        if self.vertices is None:
            r = self.radius
            return np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]])
        v = self.vertices
        points = []
        for axis, sign in ((1, -1), (0, 1), (1, 1), (0, -1)):  # top, right, bottom, left
            score = sign * v[:, axis]
            extreme = v[score >= score.max() - 1e-6]
            points.append(extreme.mean(axis=0))
        return np.array(points)


def _random_shape(rng: np.random.Generator, image_size: int) -> _Shape:
    category = int(rng.integers(len(SHAPES_CLASSES)))
    radius = float(rng.uniform(0.07, 0.22) * image_size)
    margin = radius + 1.0
    center = (
        float(rng.uniform(margin, image_size - margin)),
        float(rng.uniform(margin, image_size - margin)),
    )
    if SHAPES_CLASSES[category] == "circle":
        return _Shape(category, center, radius, None)
    corners = 4 if SHAPES_CLASSES[category] == "square" else 3
    angle = rng.uniform(0, 2 * np.pi)
    angles = angle + 2 * np.pi * np.arange(corners) / corners
    vertices = np.stack(
        [center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], 1
    )
    return _Shape(category, center, radius, vertices)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """[size, size, 3] float in [0, 255]: noise, linear gradient or stripes."""
    kind = int(rng.integers(3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    base = rng.uniform(0, 255, size=3)
    if kind == 0:  # coloured noise around a base colour
        return np.clip(base + rng.normal(0, 25, size=(size, size, 3)), 0, 255)
    other = rng.uniform(0, 255, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    t = (np.cos(direction) * xx + np.sin(direction) * yy) / size
    if kind == 1:  # gradient between two colours
        weight = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    else:  # stripes with a random period
        weight = (np.sin(t * size * 2 * np.pi / rng.uniform(6, 24)) > 0).astype(np.float64)
    return base * (1 - weight[..., None]) + other * weight[..., None]


def _place_shapes(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray):
    """Random shapes and their full masks, such that each keeps > half of its area visible."""
    shapes: list[_Shape] = []
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(20):
            shape = _random_shape(rng, size)
            mask = shape.contains(xx, yy)
            if mask.sum() < 20:
                continue
            # Visible area of every earlier shape once this one is drawn over it.
            covered = mask.copy()
            ok = True
            for earlier in reversed(masks):
                visible = earlier & ~covered
                if visible.sum() * 2 <= earlier.sum():
                    ok = False
                    break
                covered |= earlier
            if ok:
                shapes.append(shape)
                masks.append(mask)
                break
    return shapes, masks


def generate_shapes(
    output_dir: str | os.PathLike, *, num_images: int, image_size: int = 128, seed: int = 0
) -> Path:
    """Write ``num_images`` PNGs under ``output_dir/images`` and ``output_dir/annotations.json``.

    Deterministic: the same arguments give byte-identical files. Returns the json path.
    Writes in place; use :func:`shapes_split_dir` for the atomic, cached version.
    """
    from pycocotools import mask as mask_util

    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float64) + 0.5  # pixel centres
    images, annotations = [], []
    for image_index in range(num_images):
        image_id = image_index + 1
        canvas = _background(rng, image_size)
        shapes, masks = _place_shapes(rng, image_size, xx, yy)
        for mask in masks:
            colour = rng.uniform(0, 255, size=3)
            texture = rng.normal(0, 8, size=(int(mask.sum()), 3))
            canvas[mask] = np.clip(colour + texture, 0, 255)
        file_name = f"images/{image_id:05d}.png"
        Image.fromarray(canvas.round().astype(np.uint8)).save(output_dir / file_name)
        images.append(
            {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
        )

        for k, (shape, mask) in enumerate(zip(shapes, masks)):
            later = shapes[k + 1 :]
            visible = mask.copy()
            for other in masks[k + 1 :]:
                visible &= ~other
            rows, cols = np.nonzero(visible)
            x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
            rle = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
            keypoints = []
            for px, py in shape.extreme_points():
                hidden = any(bool(s.contains(np.float64(px), np.float64(py))) for s in later)
                # COCO stores pixel indices: continuous coordinate - 0.5 (the loader adds it back).
                keypoints += [
                    round(float(px) - 0.5, 3),
                    round(float(py) - 0.5, 3),
                    1 if hidden else 2,
                ]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": shape.category + 1,
                    "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
                    "area": int(visible.sum()),
                    "iscrowd": 0,
                    "segmentation": {
                        "size": [image_size, image_size],
                        "counts": rle["counts"].decode("ascii"),
                    },
                    "keypoints": keypoints,
                    "num_keypoints": len(SHAPES_KEYPOINT_NAMES),
                }
            )
    categories = [
        {
            "id": i + 1,
            "name": name,
            "supercategory": "shape",
            "keypoints": list(SHAPES_KEYPOINT_NAMES),
            "skeleton": [[1, 2], [2, 3], [3, 4], [4, 1]],
        }
        for i, name in enumerate(SHAPES_CLASSES)
    ]
    json_path = output_dir / "annotations.json"
    payload = {
        "info": {
            "description": "lazydet synthetic shapes",
            "version": _GENERATOR_VERSION,
            "seed": seed,
        },
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    json_path.write_text(json.dumps(payload, sort_keys=True, separators=(",", ":")))
    return json_path


@contextlib.contextmanager
def _split_lock(lock_file: Path, *, blocking: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``lock_file``; yields whether it is held.

    The kernel releases the lock when its holder dies, however it dies, so "lock free" means
    "nobody is generating this split now". Non-blocking: yields False when another process holds
    it. Without ``fcntl`` or on a file system that refuses locks, yields False.
    """
    if fcntl is None:
        yield False
        return
    try:  # O_RDONLY is enough for flock, so a lock file made by another user can be used too
        fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as e:
        logger.debug("no lock for the shapes cache (%s); generating without one", e)
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                yield False
                return
            logger.info("waiting for another process to finish generating %s", lock_file.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # e.g. ENOLCK on a file system without locks
            logger.debug("cannot lock %s (%s); generating without a lock", lock_file, e)
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_staging(parent: Path, target: Path) -> None:
    """Remove the staging directories of ``target``; call only while holding its lock (their
    writer is then dead: every live generator holds the lock while its staging dir exists)."""
    for staging in parent.glob(f".{target.name}.tmp-*"):
        logger.warning("removing %s, left by an interrupted generation of %s", staging, target.name)
        shutil.rmtree(staging, ignore_errors=True)
        if staging.exists():  # e.g. made by another user in a shared cache
            logger.warning("cannot remove %s; delete it by hand", staging)


def _is_complete(target: Path) -> bool:
    if (target / "annotations.json").is_file():
        return True
    if target.exists() and not os.access(target, os.R_OK | os.X_OK):
        raise PermissionError(
            f"the shapes cache {target} exists but you cannot read it (older lazydet versions "
            "made it private to its owner); ask the owner to run `chmod -R go+rX` on it, or "
            "set LAZYDET_CACHE to a directory of yours"
        )
    return False


def shapes_split_dir(
    *,
    num_images: int,
    image_size: int = 128,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Directory holding a generated shapes set, generating it atomically on first use.

    Concurrent callers (processes, also on other hosts of a shared file system with working
    ``flock``) generate the split once: the others wait for the lock, then find it complete.
    """
    root = Path(cache_dir) if cache_dir is not None else lazydet_cache_dir()
    parent = root / "shapes"
    target = parent / f"v{_GENERATOR_VERSION}-n{num_images}-s{image_size}-seed{seed}"
    lock_file = parent / f".{target.name}.lock"
    if _is_complete(target):
        # Cheap glob; the lock is only taken when a killed generator left something behind.
        if next(parent.glob(f".{target.name}.tmp-*"), None) is not None:
            with _split_lock(lock_file, blocking=False) as held:
                if held:
                    _remove_stale_staging(parent, target)
        return target
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"cannot create the shapes cache {parent}: {e}; set LAZYDET_CACHE to a writable "
            "directory"
        ) from None
    with _split_lock(lock_file, blocking=True) as held:
        if _is_complete(target):  # generated by the process we waited for
            return target
        if target.exists():
            raise FileExistsError(
                f"{target} exists but has no annotations.json (incomplete or edited); delete it "
                "and it will be generated again"
            )
        if held:
            _remove_stale_staging(parent, target)
        # os.mkdir (not tempfile.mkdtemp, which makes it 0700) so the umask decides who can read.
        staging = parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.mkdir(staging)
        try:
            generate_shapes(staging, num_images=num_images, image_size=image_size, seed=seed)
            try:
                os.rename(staging, target)
            except OSError:
                # Without a lock another process may have finished first: keep theirs.
                if not _is_complete(target):
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class ShapesLoader:
    """Picklable loader for a shapes split; generates it into the cache on first use."""

    dataset_name: str
    num_images: int
    image_size: int = 128
    seed: int = 0

    def __call__(self) -> list[dict]:
        directory = shapes_split_dir(
            num_images=self.num_images, image_size=self.image_size, seed=self.seed
        )
        records = load_coco_json(directory / "annotations.json", directory)
        # The cache location depends on $LAZYDET_CACHE at call time, so overwrite it explicitly.
        MetadataCatalog.get(self.dataset_name).replace(
            json_file=str(directory / "annotations.json"), image_root=str(directory)
        )
        return records


def register_shapes(name: str, *, num_images: int, image_size: int = 128, seed: int = 0) -> str:
    """Register a shapes split of the given size under ``name`` (returns ``name``)."""
    DatasetCatalog.register(name, ShapesLoader(name, num_images, image_size, seed))
    MetadataCatalog.get(name).set(
        thing_classes=list(SHAPES_CLASSES),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
        thing_contiguous_id_to_dataset_id={i: i + 1 for i in range(len(SHAPES_CLASSES))},
        keypoint_names=list(SHAPES_KEYPOINT_NAMES),
        keypoint_flip_map=[tuple(p) for p in SHAPES_KEYPOINT_FLIP_MAP],
        keypoint_oks_sigmas=list(SHAPES_KEYPOINT_OKS_SIGMAS),
        evaluator_type="coco",
    )
    return name
