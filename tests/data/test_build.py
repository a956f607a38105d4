"""Loader builders, SerializedList and worker behaviour (small sets, fast)."""

from __future__ import annotations

import gc
import logging
import pickle
import re
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
    TrainingSampler,
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


def test_train_loader_that_rejects_everything_stops_with_counts(tmp_path: Path) -> None:
    """Before: an infinite loop logging at INFO. Now: an error after a bounded number of
    rejections in a row, counting them per reason with an example file."""
    records = _records_with_shapes(tmp_path, [(8, 8)] * 4)
    records[0]["file_name"] = str(tmp_path / "gone.png")  # unreadable
    records[2]["file_name"] = str(tmp_path / "gone_too.png")
    for r in records[1::2]:
        r["annotations"][0]["bbox"] = (3.0, 3.0, 3.0, 3.0)  # empty: no instance survives
    mapper = DatasetMapper(
        augmentations=None, is_train=True, filter_empty=True, skip_unreadable_images=True
    )
    loader = build_train_loader(
        dataset=records, mapper=mapper, total_batch_size=2, seed=0, max_consecutive_skips=40
    )
    with pytest.raises(RuntimeError) as info:
        next(iter(loader))
    text = str(info.value)
    assert "rejected 40 images in a row" in text and "max_consecutive_skips" in text
    # Each reason appears with its count (they add up to 40) and an example file.
    counts = re.findall(r"(\d+) x (unreadable image|no instance left)", text)
    assert {reason for _, reason in counts} == {"unreadable image", "no instance left"}
    assert sum(int(n) for n, _ in counts) == 40
    assert "gone" in text and re.search(r"[13]\.png", text)
    # A mapper that is not a DatasetMapper (no last_skip_reason) is counted too.
    loader = build_train_loader(
        dataset=records, mapper=lambda r: None, total_batch_size=1, max_consecutive_skips=5
    )
    with pytest.raises(RuntimeError, match="5 x the mapper returned None"):
        next(iter(loader))
    with pytest.raises(ValueError, match="max_consecutive_skips must be >= 1"):
        build_train_loader(
            dataset=records, mapper=mapper, total_batch_size=1, max_consecutive_skips=0
        )


@pytest.mark.slow  # torch waits 5 s to shut down a worker whose iterable raised
def test_train_loader_error_from_a_worker(tmp_path: Path) -> None:
    records = _records_with_shapes(tmp_path, [(8, 8)] * 2)
    for r in records:
        r["file_name"] += ".missing"
    mapper = DatasetMapper(augmentations=None, is_train=True, skip_unreadable_images=True)
    loader = build_train_loader(
        dataset=records,
        mapper=mapper,
        total_batch_size=1,
        num_workers=1,
        seed=0,
        max_consecutive_skips=6,
    )
    with pytest.raises(RuntimeError, match=r"6 x unreadable image.*\.missing"):
        next(iter(loader))
    del loader
    gc.collect()


def test_train_loader_keeps_going_when_some_images_are_filtered(tmp_path: Path, caplog) -> None:
    records = _records_with_shapes(tmp_path, [(8, 8)] * 4)
    records[1]["annotations"][0]["bbox"] = (3.0, 3.0, 3.0, 3.0)
    mapper = DatasetMapper(augmentations=None, is_train=True, filter_empty=True)
    loader = build_train_loader(
        dataset=records,
        mapper=mapper,
        total_batch_size=3,
        sampler=TrainingSampler(4, shuffle=False),
        max_consecutive_skips=2,  # one rejection in a row, then a kept image: fine
    )
    with caplog.at_level(logging.INFO, logger="lazydet.data.build"):
        batches = list(islice(iter(loader), 4))
    assert [[d["image_id"] for d in b] for b in batches] == [[0, 2, 3], [0, 2, 3]] * 2
    assert "skipped 1 images so far: 1 x no instance left after augmentation" in caplog.text
    assert "skipped 4 images" not in caplog.text  # logged at 1, 10, 100, then every 1000


@pytest.mark.parametrize("num_workers", [0, 1])
def test_test_loader_never_yields_an_empty_batch(tmp_path: Path, caplog, num_workers) -> None:
    records = _records_with_shapes(tmp_path, [(8, 8)] * 5)
    records[1]["file_name"] = str(tmp_path / "lost.png")
    records[2]["file_name"] = str(tmp_path / "lost_too.png")
    mapper = DatasetMapper(augmentations=None, is_train=False, skip_unreadable_images=True)
    for batch_size, expected in ((1, [[0], [3], [4]]), (2, [[0], [3], [4]]), (3, [[0], [3, 4]])):
        loader = build_test_loader(
            dataset=records, mapper=mapper, batch_size=batch_size, num_workers=num_workers
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            batches = [[d["image_id"] for d in batch] for batch in loader]
        assert batches == expected
        assert "skipped 2 of 5 images" in caplog.text
        assert "2 x unreadable image" in caplog.text and "lost.png" in caplog.text
