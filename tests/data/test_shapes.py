"""The synthetic shapes dataset: deterministic, valid COCO, exact masks, keypoints on the shapes."""

from __future__ import annotations

import json
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
    assert list((tmp_path / "shapes").iterdir()) == []  # no half-written dataset left behind
    monkeypatch.undo()
    directory = shapes_split_dir(num_images=3, image_size=32, seed=0, cache_dir=tmp_path)
    assert json.loads((directory / "annotations.json").read_text())["images"][2]["id"] == 3
    assert [p.name for p in (tmp_path / "shapes").iterdir()] == [directory.name]


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
