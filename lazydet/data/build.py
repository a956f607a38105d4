"""Data loaders for training and inference, callable from configs.

Training: records -> one serialized buffer (shared by workers without copies) -> infinite seeded
sampler, sharded by rank and then by DataLoader worker -> mapper in the workers -> batches of
``total_batch_size / world_size`` images grouped by aspect ratio (landscape with landscape) in the
main process. Each batch is a ``list[dict]`` of mapper outputs, the model's input format.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from .catalog import DatasetCatalog
from .samplers import InferenceSampler, TrainingSampler
from .serialized import SerializedList, release_freed_heap_memory

__all__ = [
    "AspectRatioGroupedBatches",
    "build_test_loader",
    "build_train_loader",
    "get_detection_dataset_dicts",
    "seed_worker",
]

logger = logging.getLogger(__name__)


def get_detection_dataset_dicts(
    names: str | Sequence[str], *, filter_empty: bool = True, min_keypoints: int = 0
) -> list[dict]:
    """Records of one or more registered datasets, concatenated.

    Args:
        names: registered dataset name(s).
        filter_empty: drop images without any non-crowd annotation (count logged).
        min_keypoints: drop images with fewer visible (v > 0) keypoints in total (count logged).
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("get_detection_dataset_dicts needs at least one dataset name")
    records: list[dict] = []
    for name in names:
        loaded = DatasetCatalog.get(name)
        if not loaded:
            raise ValueError(f"dataset {name!r} is empty")
        records.extend(loaded)
    if filter_empty:
        before = len(records)
        records = [
            r for r in records if any(not a.get("iscrowd", 0) for a in r.get("annotations", ()))
        ]
        if len(records) < before:
            logger.info(
                "removed %d of %d images without annotations from %s",
                before - len(records),
                before,
                names,
            )
    if min_keypoints > 0:
        before = len(records)
        records = [
            r
            for r in records
            if sum(
                int((np.asarray(a["keypoints"])[:, 2] > 0).sum())
                for a in r.get("annotations", ())
                if "keypoints" in a
            )
            >= min_keypoints
        ]
        logger.info(
            "removed %d images with fewer than %d keypoints", before - len(records), min_keypoints
        )
    if not records:
        raise ValueError(
            f"no images left in {list(names)} after filtering (filter_empty={filter_empty})"
        )
    return records


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and numpy from the worker's torch seed.

    torch already gives each worker ``base_seed + worker_id``; without this, numpy's global
    generator would be forked identically into every worker and they would all draw the same
    "random" augmentations.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _as_records(
    dataset: str | Sequence[str] | Sequence[dict], filter_empty: bool
) -> Sequence[dict]:
    if isinstance(dataset, str) or (
        isinstance(dataset, (list, tuple)) and dataset and all(isinstance(d, str) for d in dataset)
    ):
        return get_detection_dataset_dicts(dataset, filter_empty=filter_empty)
    if isinstance(dataset, (list, tuple, SerializedList)):
        if len(dataset) == 0:
            raise ValueError("the dataset is an empty list")
        return dataset
    raise TypeError(
        f"dataset must be a name, a list of names or a list of dicts, got {type(dataset).__name__}"
    )


def _map_with_context(mapper: Callable[[dict], Any], record: dict, index: int) -> Any:
    try:
        return mapper(record)
    except (FileNotFoundError, ValueError, TypeError):
        raise  # already name the file / annotation at fault
    except Exception as e:
        raise RuntimeError(
            f"mapping record {index} (file {record.get('file_name')!r}, image_id="
            f"{record.get('image_id')!r}) failed: {type(e).__name__}: {e}"
        ) from e


class _SampledMappedStream(IterableDataset):
    """Iterates a sampler, each DataLoader worker taking every ``num_workers``-th index,
    and yields the mapped records (skipping the ``None`` a mapper returns to filter)."""

    def __init__(
        self, records: Sequence[dict], sampler: Iterable[int], mapper: Callable[[dict], Any]
    ):
        self.records = records
        self.sampler = sampler
        self.mapper = mapper

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skipped = 0
        for position, index in enumerate(self.sampler):
            if position % num_workers != worker:
                continue
            item = _map_with_context(self.mapper, self.records[index], index)
            if item is None:
                skipped += 1
                if skipped in (1, 10, 100) or skipped % 1000 == 0:
                    logger.info(
                        "the mapper filtered out %d images so far (worker %d)", skipped, worker
                    )
                continue
            yield item


class AspectRatioGroupedBatches:
    """Lists of ``batch_size`` mapped records; with ``group_by_aspect_ratio`` landscape
    (W >= H) and portrait images are batched separately, so padding to a common size wastes
    less."""

    def __init__(
        self, stream: Iterable[dict], batch_size: int, *, group_by_aspect_ratio: bool = True
    ):
        self.stream = stream
        self.batch_size = batch_size
        self.group_by_aspect_ratio = group_by_aspect_ratio

    def __iter__(self) -> Iterator[list[dict]]:
        buckets: list[list[dict]] = [[], []]
        for item in self.stream:
            height, width = item["image"].shape[-2:]
            bucket = buckets[int(width < height)] if self.group_by_aspect_ratio else buckets[0]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def build_train_loader(
    *,
    dataset: str | Sequence[str] | Sequence[dict],
    mapper: Callable[[dict], Any],
    total_batch_size: int,
    sampler: Sampler[int] | Iterable[int] | None = None,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    filter_empty: bool = True,
    seed: int | None = None,
    serialize: bool = True,
) -> AspectRatioGroupedBatches:
    """Infinite iterable of training batches (``list[dict]`` of ``total_batch_size / world_size``).

    Args:
        dataset: registered name(s) or a list of records.
        mapper: record -> model input dict (e.g. :class:`DatasetMapper`), run in the workers.
        total_batch_size: images per step over all ranks; must be divisible by the world size.
        sampler: index sampler (default: :class:`TrainingSampler` with ``seed``).
        num_workers: DataLoader worker processes (0: map in the main process).
        aspect_ratio_grouping: batch landscape and portrait images separately.
        filter_empty: drop images without annotations when loading registered names.
        seed: seeds the default sampler and the workers' random generators.
        serialize: store records in one byte buffer shared by the workers (see SerializedList).
    """
    world_size = _world_size()
    if total_batch_size <= 0 or total_batch_size % world_size:
        raise ValueError(
            f"total_batch_size={total_batch_size} must be a positive multiple of the world size {world_size}"
        )
    records = _as_records(dataset, filter_empty)
    if serialize and not isinstance(records, SerializedList):
        records = SerializedList(records)
        release_freed_heap_memory()  # the dict list just dropped (if the caller kept no reference)
    if sampler is None:
        sampler = TrainingSampler(len(records), seed=seed)
    stream = _SampledMappedStream(records, sampler, mapper)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=num_workers > 0,
    )
    return AspectRatioGroupedBatches(
        loader, total_batch_size // world_size, group_by_aspect_ratio=aspect_ratio_grouping
    )


class _MappedDataset(Dataset):
    def __init__(self, records: Sequence[dict], mapper: Callable[[dict], Any]):
        self.records = records
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        return _map_with_context(self.mapper, self.records[index], index)


def _collate_list(batch: list[Any]) -> list[Any]:
    return [item for item in batch if item is not None]


def build_test_loader(
    *,
    dataset: str | Sequence[str] | Sequence[dict],
    mapper: Callable[[dict], Any],
    batch_size: int = 1,
    num_workers: int = 0,
    sampler: Sampler[int] | None = None,
    serialize: bool = True,
) -> DataLoader:
    """Finite loader over every image once (this rank's contiguous shard), in dataset order.

    Batches are ``list[dict]``; images are never filtered (evaluation must see all of them).
    """
    records = _as_records(dataset, filter_empty=False)
    if serialize and not isinstance(records, SerializedList):
        records = SerializedList(records)
        release_freed_heap_memory()
    if sampler is None:
        sampler = InferenceSampler(len(records))
    return DataLoader(
        _MappedDataset(records, mapper),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate_list,
        worker_init_fn=seed_worker,
    )
