"""Loader builders, SerializedList and worker behaviour (small sets, fast)."""

from __future__ import annotations

import gc
import pickle
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image

from lazydet.data import (
    DatasetMapper,
    SerializedList,
    build_test_loader,
    build_train_loader,
    get_detection_dataset_dicts,
    load_coco_json,
)
from lazydet.data.datasets import generate_shapes


def _records_with_shapes(tmp_path: Path, sizes: list[tuple[int, int]]) -> list[dict]:
    records = []
    for i, (h, w) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((h, w, 3), i, dtype=np.uint8)).save(path)
        records.append(
            {
                "file_name": str(path),
                "image_id": i,
                "height": h,
                "width": w,
                "annotations": [
                    {"id": i, "bbox": (1.0, 1.0, 5.0, 5.0), "category_id": 0, "iscrowd": 0}
                ],
            }
        )
    return records


def test_serialized_list_round_trip() -> None:
    items = [{"a": i, "arr": np.arange(i), "s": "x" * i} for i in range(20)]
    packed = SerializedList(items)
    assert len(packed) == 20
    for i in (0, 7, 19, -1):
        expected = items[i]
        got = packed[i]
        assert got["a"] == expected["a"] and got["s"] == expected["s"]
        np.testing.assert_array_equal(got["arr"], expected["arr"])
    assert packed[2] is not packed[2]  # a fresh copy each time: callers may mutate it
    assert [d["a"] for d in pickle.loads(pickle.dumps(packed))[3:6]] == [3, 4, 5]
    with pytest.raises(IndexError):
        packed[20]


def test_train_loader_batches_group_by_aspect_ratio(tmp_path: Path) -> None:
    sizes = [(16, 24), (24, 16)] * 6  # landscape / portrait alternating
    records = _records_with_shapes(tmp_path, sizes)
    mapper = DatasetMapper(augmentations=None, is_train=True)
    loader = build_train_loader(dataset=records, mapper=mapper, total_batch_size=3, seed=0)
    batches = list(islice(iter(loader), 8))
    for batch in batches:
        assert len(batch) == 3
        orientations = {b["image"].shape[2] >= b["image"].shape[1] for b in batch}
        assert len(orientations) == 1
    seen = {b["image_id"] for batch in batches for b in batch}
    assert seen == set(range(12))
    ungrouped = build_train_loader(
        dataset=records, mapper=mapper, total_batch_size=4, seed=0, aspect_ratio_grouping=False
    )
    first = next(iter(ungrouped))
    assert len(first) == 4 and len({tuple(b["image"].shape) for b in first}) == 2


def test_train_loader_with_workers_is_seeded(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    generate_shapes(root, num_images=6, image_size=32, seed=2)
    records = load_coco_json(root / "annotations.json", root)
    augment = T.Compose([T.RandomHorizontalFlip(0.5), T.ColorJitter(brightness=0.5)])
    mapper = DatasetMapper(augmentations=augment, is_train=True)

    def first_batches(seed: int) -> list[torch.Tensor]:
        loader = build_train_loader(
            dataset=records, mapper=mapper, total_batch_size=2, num_workers=2, seed=seed
        )
        return [torch.stack([d["image"] for d in batch]) for batch in islice(iter(loader), 3)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


def test_worker_error_names_the_file(tmp_path: Path) -> None:
    records = _records_with_shapes(tmp_path, [(8, 8)])
    records[0]["file_name"] = str(tmp_path / "vanished.png")
    loader = build_train_loader(
        dataset=records,
        mapper=DatasetMapper(augmentations=None, is_train=True),
        total_batch_size=1,
        num_workers=1,
        seed=0,
    )
    with pytest.raises(FileNotFoundError, match="vanished.png"):
        next(iter(loader))
    # torch's DataLoader waits 5 s to shut down a worker whose iterable raised; collect it here
    # rather than in whichever later test happens to trigger the garbage collector.
    del loader
    gc.collect()


def test_test_loader_sees_every_image_once_in_order(tmp_path: Path) -> None:
    records = _records_with_shapes(tmp_path, [(8, 8)] * 5)
    records[2]["annotations"] = []
    loader = build_test_loader(
        dataset=records, mapper=DatasetMapper(augmentations=None, is_train=False), batch_size=2
    )
    ids = [d["image_id"] for batch in loader for d in batch]
    assert ids == [0, 1, 2, 3, 4]


def test_get_dataset_dicts_filters_empty(tmp_path: Path, caplog) -> None:
    from lazydet.data import DatasetCatalog

    records = _records_with_shapes(tmp_path, [(8, 8)] * 3)
    records[1]["annotations"] = []
    records[2]["annotations"][0]["iscrowd"] = 1
    DatasetCatalog.register("test_build_filter", lambda: records)
    try:
        with caplog.at_level("INFO"):
            kept = get_detection_dataset_dicts("test_build_filter")
        assert [r["image_id"] for r in kept] == [0]
        assert "removed 2 of 3 images without annotations" in caplog.text
        assert len(get_detection_dataset_dicts(["test_build_filter"], filter_empty=False)) == 3
        records[0]["annotations"] = []
        with pytest.raises(ValueError, match="no images left"):
            get_detection_dataset_dicts("test_build_filter")
    finally:
        DatasetCatalog.remove("test_build_filter")
    with pytest.raises(ValueError, match="multiple of the world size"):
        build_train_loader(dataset=records, mapper=lambda r: r, total_batch_size=0)
