"""Index samplers for training (infinite, seeded, sharded by rank) and inference (each image once).

``rank``/``world_size`` default to torch.distributed's when a process group is initialised, else
0 and 1, so the same code runs single-process and under DDP.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from lazydet.utils import comm

__all__ = [
    "InferenceSampler",
    "RepeatFactorTrainingSampler",
    "TrainingSampler",
    "repeat_factors_from_category_frequency",
]


def _rank_and_world_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if world_size is None:
        world_size = comm.get_world_size()
    if rank is None:
        rank = comm.get_rank()
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


def _shared_seed(seed: int | None) -> int:
    """``seed``, or a random seed drawn on rank 0 and broadcast, so all ranks shuffle alike."""
    if seed is not None:
        return int(seed)
    drawn = torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64)
    if comm.is_distributed():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        drawn = drawn.to(backend_device)
        dist.broadcast(drawn, src=0)
    return int(drawn.item())


class TrainingSampler(Sampler[int]):
    """Infinite stream of indices in ``[0, size)``: a fresh permutation per epoch (or the
    identity with ``shuffle=False``), where rank ``r`` takes elements ``r, r + W, r + 2W, ...``
    of the global stream. All ranks use the same ``seed`` (drawn and broadcast if ``None``).
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size={size}")
        self.size = size
        self.shuffle = shuffle
        self.seed = _shared_seed(seed)
        self.rank, self.world_size = _rank_and_world_size(rank, world_size)

    def _global_stream(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=generator).tolist()
            else:
                yield from range(self.size)

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self._global_stream()):
            if position % self.world_size == self.rank:
                yield index


class InferenceSampler(Sampler[int]):
    """Every index exactly once across ranks, as contiguous shards whose sizes differ by at
    most one (rank ``r`` gets ``[start_r, end_r)``), so gathered results keep dataset order."""

    def __init__(
        self, size: int, *, rank: int | None = None, world_size: int | None = None
    ) -> None:
        self.size = size
        self.rank, self.world_size = _rank_and_world_size(rank, world_size)
        base, extra = divmod(size, self.world_size)
        self.start = self.rank * base + min(self.rank, extra)
        self.end = self.start + base + (1 if self.rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def repeat_factors_from_category_frequency(
    dataset_dicts: Sequence[dict], repeat_thresh: float
) -> torch.Tensor:
    """LVIS-style per-image repeat factors (Gupta et al. 2019), float ``[len(dataset_dicts)]``.

    For category ``c`` with ``f_c`` = fraction of images containing it,
    ``r_c = max(1, sqrt(repeat_thresh / f_c))``; an image repeats ``max(r_c)`` over its categories
    (1 for an image without annotations).
    """
    if not dataset_dicts:
        raise ValueError("cannot compute repeat factors of an empty dataset")
    images_with_category: defaultdict[int, int] = defaultdict(int)
    categories_per_image = []
    for record in dataset_dicts:
        categories = {a["category_id"] for a in record.get("annotations", ())}
        categories_per_image.append(categories)
        for c in categories:
            images_with_category[c] += 1
    num_images = len(dataset_dicts)
    category_repeat = {
        c: max(1.0, math.sqrt(repeat_thresh / (count / num_images)))
        for c, count in images_with_category.items()
    }
    return torch.tensor(
        [max((category_repeat[c] for c in cats), default=1.0) for cats in categories_per_image],
        dtype=torch.float32,
    )


class RepeatFactorTrainingSampler(Sampler[int]):
    """Infinite, sharded like :class:`TrainingSampler`, but each epoch repeats image ``i``
    ``floor(r_i)`` times plus once more with probability ``r_i - floor(r_i)`` (stochastic
    rounding, so the expected count is ``r_i``)."""

    def __init__(
        self,
        repeat_factors: torch.Tensor | Sequence[float],
        *,
        shuffle: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        factors = torch.as_tensor(repeat_factors, dtype=torch.float32)
        if factors.dim() != 1 or factors.numel() == 0 or bool((factors < 0).any()):
            raise ValueError("repeat_factors must be a non-empty 1-D tensor of non-negative values")
        self.integer_part = torch.floor(factors)
        self.fractional_part = factors - self.integer_part
        self.shuffle = shuffle
        self.seed = _shared_seed(seed)
        self.rank, self.world_size = _rank_and_world_size(rank, world_size)

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """Indices of one epoch (repeats included, not shuffled)."""
        extra = torch.rand(self.fractional_part.shape, generator=generator) < self.fractional_part
        counts = (self.integer_part + extra.to(torch.float32)).to(torch.long)
        return torch.repeat_interleave(torch.arange(len(counts)), counts)

    def _global_stream(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            indices = self.epoch_indices(generator)
            if self.shuffle:
                indices = indices[torch.randperm(len(indices), generator=generator)]
            yield from indices.tolist()

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self._global_stream()):
            if position % self.world_size == self.rank:
                yield index
