"""Data loaders for training and inference, callable from configs.

Training: records -> one serialized buffer (shared by workers without copies) -> infinite seeded
sampler, sharded by rank and then by DataLoader worker -> mapper in the workers -> batches of
``total_batch_size / world_size`` images grouped by aspect ratio (landscape with landscape) in the
main process. Each batch is a ``list[dict]`` of mapper outputs, the model's input format.

Exact resume: the random augmentations of the sample at stream position ``p`` are drawn from a
generator seeded by ``(seed, rank, p)``, not from a worker's running state, so a sample maps to
the same tensors whatever the worker count and whenever it is mapped. The batcher records the
next stream position and the positions waiting in its aspect-ratio buckets
(``AspectRatioGroupedBatches.state_dict``); a resumed loader maps the waiting ones again and
continues at the next position, producing the same batches as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from lazydet.utils import comm

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


def _skip_reason(mapper: Callable[[dict], Any]) -> str:
    """Why ``mapper`` just returned ``None`` (``DatasetMapper.last_skip_reason``), for counting."""
    return getattr(mapper, "last_skip_reason", None) or "the mapper returned None"


class _Sample(NamedTuple):
    """One position of the training stream: its mapped item, or None when the mapper skipped
    the image or the position was delivered before a resume."""

    position: int
    item: Any


@contextlib.contextmanager
def _seeded_rng(seed: int, *, restore: bool) -> Iterator[None]:
    """Seed torch's CPU generator, numpy's and Python's global ones; with ``restore``, put
    their previous states back afterwards (mapping in the main process must not consume the
    training loop's random stream)."""
    saved = (torch.get_rng_state(), np.random.get_state(), random.getstate()) if restore else None
    torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])


class _SampledMappedStream(IterableDataset):
    """Iterates a sampler, each DataLoader worker taking every ``num_workers``-th index,
    and yields the mapped records, skipping the ``None`` a mapper returns to filter an image.

    Each position of the sampler stream from ``start`` on yields exactly one :class:`_Sample`
    (``item=None`` for a skipped image or a position in ``skip``, i.e. delivered before a
    resume): with one element per position, the DataLoader's round-robin over workers returns
    the positions in order, which lets the batcher record where the stream stands. With
    ``sample_seed``, the augmentations of position ``p`` draw from a generator seeded by
    ``(sample_seed, rank, p)``.

    The sampler is infinite, so a mapper that rejects every image would loop for ever: after
    ``max_consecutive_skips`` rejections in a row (in one worker) it raises instead, with the
    count per reason.
    """

    def __init__(
        self,
        records: Sequence[dict],
        sampler: Iterable[int],
        mapper: Callable[[dict], Any],
        max_consecutive_skips: int,
        *,
        sample_seed: int | None = None,
        rank: int = 0,
    ):
        self.records = records
        self.sampler = sampler
        self.mapper = mapper
        self.max_consecutive_skips = max_consecutive_skips
        self.sample_seed = sample_seed
        self.rank = rank
        self.start = 0
        self.skip: frozenset[int] = frozenset()

    def _map(self, record: dict, index: int, position: int) -> Any:
        if self.sample_seed is None:
            return _map_with_context(self.mapper, record, index)
        seed = int(
            np.random.SeedSequence([self.sample_seed, self.rank, position]).generate_state(1)[0]
        )
        with _seeded_rng(seed, restore=get_worker_info() is None):
            return _map_with_context(self.mapper, record, index)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            # Ctrl-C reaches every process of the terminal's group: a worker that died of it
            # would fail the step the trainer is finishing to save its checkpoint.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        skipped: Counter[str] = Counter()  # all skips of this worker, by reason
        in_a_row: Counter[str] = Counter()  # the skips since the last image that was kept
        example: dict[str, Any] = {}
        for position, index in enumerate(self.sampler):
            if position < self.start or (position - self.start) % num_workers != worker:
                continue
            if position in self.skip:
                yield _Sample(position, None)
                continue
            record = self.records[index]
            item = self._map(record, index, position)
            if item is not None:
                in_a_row.clear()
                yield _Sample(position, item)
                continue
            yield _Sample(position, None)
            reason = _skip_reason(self.mapper)
            skipped[reason] += 1
            in_a_row[reason] += 1
            example.setdefault(reason, record.get("file_name"))
            total = sum(skipped.values())
            if total in (1, 10, 100) or total % 1000 == 0:
                logger.info(
                    "worker %d skipped %d images so far: %s", worker, total, _counts(skipped)
                )
            if sum(in_a_row.values()) >= self.max_consecutive_skips:
                raise RuntimeError(
                    f"the training mapper rejected {self.max_consecutive_skips} images in a row "
                    f"(worker {worker}), so no batch can be formed: "
                    f"{_counts(in_a_row, example)}. Fix the images or the mapper's filters "
                    "(DatasetMapper filter_empty / skip_unreadable_images), or raise "
                    "build_train_loader(max_consecutive_skips=...) if that many rejections in a "
                    "row are expected."
                )


def _counts(counter: Counter[str], example: dict[str, Any] | None = None) -> str:
    return "; ".join(
        f"{n} x {reason}" + (f" (e.g. {example[reason]!r})" if example else "")
        for reason, n in counter.most_common()
    )


class AspectRatioGroupedBatches:
    """Lists of ``batch_size`` mapped records; with ``group_by_aspect_ratio`` landscape
    (W >= H) and portrait images are batched separately, so padding to a common size wastes
    less.

    Given ``source``, the positioned stream ``build_train_loader`` makes, the batcher keeps its
    place: ``state_dict()`` after a batch was handed out, ``load_state_dict()`` before iterating
    again, and the next batches are those an uninterrupted iteration would have given.
    """

    def __init__(
        self,
        stream: Iterable[Any],
        batch_size: int,
        *,
        group_by_aspect_ratio: bool = True,
        source: _SampledMappedStream | None = None,
    ):
        self.stream = stream
        self.batch_size = batch_size
        self.group_by_aspect_ratio = group_by_aspect_ratio
        self.source = source
        self._next_position = 0
        self._waiting: list[list[int]] = [[], []]  # stream positions held in each bucket

    def __iter__(self) -> Iterator[list[dict]]:
        buckets: list[list[dict]] = [[], []]
        self._waiting = [[], []]
        for element in self.stream:
            position = None
            if isinstance(element, _Sample):
                position, element = element
                self._next_position = position + 1
                if element is None:  # skipped by the mapper, or batched before a resume
                    continue
            height, width = element["image"].shape[-2:]
            b = int(width < height) if self.group_by_aspect_ratio else 0
            buckets[b].append(element)
            if position is not None:
                self._waiting[b].append(position)
            if len(buckets[b]) == self.batch_size:
                batch = buckets[b][:]
                # Emptied before the yield: a state_dict() taken while the consumer holds this
                # batch must not count its images as waiting.
                buckets[b].clear()
                self._waiting[b].clear()
                yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands after the batches handed out so far (plain ints)."""
        if self.source is None:
            raise TypeError(
                "this AspectRatioGroupedBatches has no positioned source to resume; build it "
                "with build_train_loader"
            )
        return {
            "next_position": self._next_position,
            "waiting": [list(w) for w in self._waiting],
            "sample_seed": self.source.sample_seed,
            "sampler_seed": getattr(self.source.sampler, "seed", None),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (call before iterating)."""
        if self.source is None:
            raise TypeError("this AspectRatioGroupedBatches has no positioned source to resume")
        next_position = int(state["next_position"])
        waiting = sorted(int(p) for w in state["waiting"] for p in w)
        start = min([*waiting, next_position])
        # Positions before next_position that are not waiting were batched (or skipped) before
        # the checkpoint: map only the waiting ones again, in order, so the buckets refill as
        # they were.
        self.source.start = start
        self.source.skip = frozenset(range(start, next_position)) - frozenset(waiting)
        if state.get("sample_seed") is not None:
            self.source.sample_seed = int(state["sample_seed"])
        if state.get("sampler_seed") is not None and hasattr(self.source.sampler, "seed"):
            self.source.sampler.seed = int(state["sampler_seed"])
        self._next_position = next_position


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
    max_consecutive_skips: int = 1000,
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
        max_consecutive_skips: a ``RuntimeError`` (with the count per reason) stops the loader
            when the mapper returns ``None`` for this many images in a row in one worker, rather
            than looping for ever; the images skipped so far are logged at INFO.
    """
    if max_consecutive_skips < 1:
        raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
    world_size = comm.get_world_size()
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
    # Per-sample augmentation seeds (see the module docstring); with seed=None, the sampler's
    # shared seed or a fresh draw, recorded in the loader's state_dict for a resume.
    sample_seed = seed if seed is not None else getattr(sampler, "seed", None)
    if sample_seed is None:
        sample_seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    rank = comm.get_rank()
    stream = _SampledMappedStream(
        records, sampler, mapper, max_consecutive_skips, sample_seed=sample_seed, rank=rank
    )
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
        loader,
        total_batch_size // world_size,
        group_by_aspect_ratio=aspect_ratio_grouping,
        source=stream,
    )


class _MappedDataset(Dataset):
    def __init__(self, records: Sequence[dict], mapper: Callable[[dict], Any]):
        self.records = records
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        item = _map_with_context(self.mapper, self.records[index], index)
        if item is None:
            return _Skipped(_skip_reason(self.mapper), self.records[index].get("file_name"))
        return item


class _Skipped(NamedTuple):
    """Stands for an image the mapper skipped, so the loader can count it."""

    reason: str
    file_name: Any


def _collate_list(batch: list[Any]) -> list[Any]:
    return batch  # a list[dict]; skipped images are dropped by _InferenceLoader in the main process


class _InferenceLoader(DataLoader):
    """DataLoader whose batches leave out the images the mapper skipped and that never yields
    an empty batch (a model refuses one): with ``batch_size=1`` a skipped image yields nothing.
    ``len()`` is the number of batches before skipping. The skipped images are counted per
    reason and logged as a warning when the iteration ends, as they are missing from the
    results."""

    def __iter__(self) -> Iterator[list[Any]]:  # type: ignore[override]
        skipped: Counter[str] = Counter()
        example: dict[str, Any] = {}
        seen = 0
        try:
            for batch in super().__iter__():
                seen += len(batch)
                kept = [item for item in batch if not isinstance(item, _Skipped)]
                for reason, file_name in (item for item in batch if isinstance(item, _Skipped)):
                    skipped[reason] += 1
                    example.setdefault(reason, file_name)
                if kept:
                    yield kept
        finally:
            if skipped:
                logger.warning(
                    "the test mapper skipped %d of %d images, which are missing from the "
                    "results: %s",
                    sum(skipped.values()),
                    seen,
                    _counts(skipped, example),
                )


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

    Batches are ``list[dict]``; images are never filtered (evaluation must see all of them),
    except those the mapper skips (``DatasetMapper(skip_unreadable_images=True)``): they are
    left out of their batch (a batch left empty is not yielded) and their count is logged as a
    warning when the iteration ends.
    """
    records = _as_records(dataset, filter_empty=False)
    if serialize and not isinstance(records, SerializedList):
        records = SerializedList(records)
        release_freed_heap_memory()
    if sampler is None:
        sampler = InferenceSampler(len(records))
    return _InferenceLoader(
        _MappedDataset(records, mapper),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate_list,
        worker_init_fn=seed_worker,
    )
