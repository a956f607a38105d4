"""The synthetic shapes dataset: deterministic, valid COCO, exact masks, keypoints on the shapes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from lazydet.data import DatasetCatalog, MetadataCatalog
from lazydet.data.datasets import generate_shapes, shapes_split_dir
from lazydet.data.datasets import shapes as shapes_module

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


def _all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_images=12, image_size=64, seed=3)
    return root


def test_generation_is_deterministic(small_set: Path, tmp_path: Path) -> None:
    generate_shapes(tmp_path, num_images=12, image_size=64, seed=3)
    assert _all_files(tmp_path) == _all_files(small_set)
    other = tmp_path / "other_seed"
    generate_shapes(other, num_images=12, image_size=64, seed=4)
    assert _all_files(other)["annotations.json"] != _all_files(small_set)["annotations.json"]


def test_json_is_valid_coco_with_exact_masks(small_set: Path) -> None:
    api = COCO(str(small_set / "annotations.json"))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["circle", "square", "triangle"]
    assert len(api.imgs) == 12 and len(api.anns) >= 12
    all_masks_per_image: dict[int, list[np.ndarray]] = {}
    for ann in api.anns.values():
        mask = api.annToMask(ann)
        assert mask.sum() == ann["area"] > 0
        # The box is exactly the tight box of the mask (pycocotools' own toBbox).
        np.testing.assert_array_equal(mask_util.toBbox(ann["segmentation"]), ann["bbox"])
        rows, cols = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h)
        all_masks_per_image.setdefault(ann["image_id"], []).append(mask)
    for masks in all_masks_per_image.values():
        # Visible masks of one image never overlap (later shapes hide earlier ones).
        assert np.stack(masks).sum(0).max() == 1


def test_masks_match_the_painted_pixels(small_set: Path) -> None:
    """Inside a visible mask the image is the shape's colour (low-noise texture), so pixels of
    one instance are much closer to each other than to the pixels around the instance."""
    from PIL import Image

    api = COCO(str(small_set / "annotations.json"))
    for image_id in list(api.imgs)[:4]:
        image = np.asarray(Image.open(small_set / api.imgs[image_id]["file_name"])).astype(float)
        for ann in api.imgToAnns[image_id]:
            mask = api.annToMask(ann).astype(bool)
            inside = image[mask]
            assert inside.std(axis=0).max() < 12  # texture sigma is 8 per channel


def test_keypoints_lie_on_their_shape(small_set: Path) -> None:
    api = COCO(str(small_set / "annotations.json"))
    for ann in api.anns.values():
        mask = api.annToMask(ann).astype(bool)
        rows, cols = np.nonzero(mask)
        centres = np.stack([cols + 0.5, rows + 0.5], 1)
        kp = np.array(ann["keypoints"], dtype=float).reshape(4, 3)
        assert set(kp[:, 2]) <= {1, 2}
        for x, y, v in kp:
            point = np.array([x + 0.5, y + 0.5])  # the COCO pixel-index convention
            distance = np.sqrt(((centres - point) ** 2).sum(1)).min()
            if v == 2:  # visible: on the visible part of the shape (boundary: within 2 px)
                assert distance <= 2.0, (ann["id"], x, y)
        top, right, bottom, left = kp[:, :2]
        assert top[1] <= min(right[1], left[1]) and bottom[1] >= max(right[1], left[1])
        assert left[0] <= min(top[0], bottom[0]) and right[0] >= max(top[0], bottom[0])


def test_cache_generation_is_atomic(tmp_path: Path, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while generating")

    monkeypatch.setattr(shapes_module, "generate_shapes", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        shapes_split_dir(num_images=3, image_size=32, seed=0, cache_dir=tmp_path)
    assert _entries(tmp_path) == []  # no half-written dataset left behind
    monkeypatch.undo()
    directory = shapes_split_dir(num_images=3, image_size=32, seed=0, cache_dir=tmp_path)
    assert json.loads((directory / "annotations.json").read_text())["images"][2]["id"] == 3
    assert _entries(tmp_path) == [directory.name]


def _entries(cache: Path) -> list[str]:
    """What the cache's shapes/ folder holds, lock files (kept on purpose) left out."""
    return sorted(p.name for p in (cache / "shapes").iterdir() if not p.name.endswith(".lock"))


def _staging_dirs(cache: Path) -> list[Path]:
    return sorted((cache / "shapes").glob(".*.tmp-*"))


def _generate_in_child(cache: Path, result: Path) -> None:
    """Child process body: generate the split, write the directory it got to ``result``."""
    directory = shapes_split_dir(num_images=2, image_size=32, seed=0, cache_dir=cache)
    result.write_text(str(directory))


def test_killed_generator_leaves_nothing_behind_for_good(tmp_path: Path, monkeypatch) -> None:
    """A generator killed with SIGKILL (no cleanup code runs) leaves its staging dir; the next
    generation removes it -- but never while the generator is alive (it holds the lock)."""
    started = tmp_path / "started"

    def hang(output_dir, **kwargs):
        (Path(output_dir) / "half-written.png").write_bytes(b"x")
        started.touch()
        time.sleep(60)

    monkeypatch.setattr(shapes_module, "generate_shapes", hang)
    child = multiprocessing.get_context("fork").Process(
        target=_generate_in_child, args=(tmp_path, tmp_path / "unused")
    )
    child.start()
    try:
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the child never started generating"
        [staging] = _staging_dirs(tmp_path)
        lock = tmp_path / "shapes" / ".v1-n2-s32-seed0.lock"
        with shapes_module._split_lock(lock, blocking=False) as held:
            assert not held  # a live generator's staging dir is not up for removal
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    assert staging.is_dir()  # what SIGKILL leaves behind
    monkeypatch.undo()
    directory = shapes_split_dir(num_images=2, image_size=32, seed=0, cache_dir=tmp_path)
    assert _staging_dirs(tmp_path) == [] and _entries(tmp_path) == [directory.name]
    # A staging dir that shows up beside a complete split (a crash of an older lazydet) goes too.
    stale = tmp_path / "shapes" / f".{directory.name}.tmp-abc123"
    (stale / "images").mkdir(parents=True)
    assert shapes_split_dir(num_images=2, image_size=32, seed=0, cache_dir=tmp_path) == directory
    assert not stale.exists()


def test_two_processes_generate_once(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "generations.log"
    real_generate = shapes_module.generate_shapes

    def logged(output_dir, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # both processes are surely inside shapes_split_dir by now
        return real_generate(output_dir, **kwargs)

    monkeypatch.setattr(shapes_module, "generate_shapes", logged)
    context = multiprocessing.get_context("fork")
    results = [tmp_path / f"result{i}" for i in range(2)]
    children = [context.Process(target=_generate_in_child, args=(tmp_path, r)) for r in results]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    directories = {r.read_text() for r in results}
    assert len(directories) == 1
    assert len(log.read_text().split()) == 1  # the second process waited and reused the first's
    directory = Path(directories.pop())
    assert len(json.loads((directory / "annotations.json").read_text())["images"]) == 2
    assert _staging_dirs(tmp_path) == [] and _entries(tmp_path) == [directory.name]


@pytest.mark.parametrize(
    ("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)]
)
def test_cache_permissions_follow_the_umask(tmp_path: Path, umask, dir_mode, file_mode) -> None:
    """A shared LAZYDET_CACHE needs group/other-readable folders (mkdtemp made them 0700); a
    user who wants a private cache sets a private umask."""
    previous = os.umask(umask)
    try:
        directory = shapes_split_dir(num_images=1, image_size=32, seed=0, cache_dir=tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(directory.stat().st_mode) == dir_mode
    assert stat.S_IMODE((directory / "images").stat().st_mode) == dir_mode
    assert stat.S_IMODE((directory / "annotations.json").stat().st_mode) == file_mode
    assert stat.S_IMODE(next((directory / "images").iterdir()).stat().st_mode) == file_mode


def test_unreadable_cache_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    target = shapes_split_dir(num_images=1, image_size=32, seed=0, cache_dir=tmp_path)
    # Another user's 0700 folder, as root cannot be denied access: os.access says no.
    (target / "annotations.json").unlink()
    monkeypatch.setattr(shapes_module.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(PermissionError, match=r"cannot read it.*chmod -R go\+rX.*LAZYDET_CACHE"):
        shapes_split_dir(num_images=1, image_size=32, seed=0, cache_dir=tmp_path)
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="has no annotations.json.*delete it"):
        shapes_split_dir(num_images=1, image_size=32, seed=0, cache_dir=tmp_path)


def test_registered_split_uses_the_cache_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAZYDET_CACHE", str(tmp_path))
    name = "test_shapes_tiny"
    shapes_module.register_shapes(name, num_images=4, image_size=48, seed=5)
    try:
        records = DatasetCatalog.get(name)
        assert len(records) == 4
        assert all(Path(r["file_name"]).is_relative_to(tmp_path) for r in records)
        meta = MetadataCatalog.get(name)
        assert meta.keypoint_names == ["top", "right", "bottom", "left"]
        assert meta.keypoint_flip_map == [("left", "right")]
        assert Path(meta.json_file).is_file()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
