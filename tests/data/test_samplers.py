"""Samplers: rank shards cover every index exactly once; repeat factors as hand-computed."""

from __future__ import annotations

import math
from itertools import islice

import pytest
import torch

from lazydet.data import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)


@pytest.mark.parametrize("size", [0, 1, 5, 10, 11])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_inference_sampler_shards(size: int, world_size: int) -> None:
    shards = [
        list(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)
    ]
    assert [i for shard in shards for i in shard] == list(range(size))  # contiguous, in order, once
    lengths = [len(s) for s in shards]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == [
        len(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)
    ]


@pytest.mark.parametrize("world_size", [1, 3])
def test_training_sampler_epochs_cover_all_indices(world_size: int) -> None:
    size, epochs = 12, 3
    per_rank = size * epochs // world_size
    shards = [
        list(islice(TrainingSampler(size, seed=7, rank=r, world_size=world_size), per_rank))
        for r in range(world_size)
    ]
    # Rebuild the global stream: position p belongs to rank p % world_size.
    stream = [shards[p % world_size][p // world_size] for p in range(size * epochs)]
    for epoch in range(epochs):
        assert sorted(stream[epoch * size : (epoch + 1) * size]) == list(range(size))
    first_epoch_shards = [set(s[: size // world_size]) for s in shards]
    assert set().union(*first_epoch_shards) == set(range(size))
    assert sum(len(s) for s in first_epoch_shards) == size  # disjoint
    assert stream[:size] != stream[size : 2 * size]  # a new permutation each epoch


def test_training_sampler_seeding() -> None:
    a = list(islice(TrainingSampler(50, seed=1), 100))
    assert a == list(islice(TrainingSampler(50, seed=1), 100))
    assert a != list(islice(TrainingSampler(50, seed=2), 100))
    assert list(islice(TrainingSampler(4, shuffle=False), 6)) == [0, 1, 2, 3, 0, 1]
    with pytest.raises(ValueError, match="rank"):
        TrainingSampler(4, rank=2, world_size=2)


def test_repeat_factors_hand_computed() -> None:
    records = [
        {"annotations": [{"category_id": 0}]},
        {"annotations": [{"category_id": 0}, {"category_id": 0}]},
        {"annotations": [{"category_id": 0}]},
        {"annotations": [{"category_id": 1}, {"category_id": 0}]},
        {"annotations": []},
    ]
    # f_0 = 4/5 -> r_0 = max(1, sqrt(0.4 / 0.8)) = 1; f_1 = 1/5 -> r_1 = sqrt(0.4 / 0.2) = sqrt(2).
    factors = repeat_factors_from_category_frequency(records, repeat_thresh=0.4)
    torch.testing.assert_close(factors, torch.tensor([1.0, 1.0, 1.0, math.sqrt(2), 1.0]))


def test_repeat_factor_sampler_stochastic_rounding() -> None:
    factors = torch.tensor([1.0, 0.5, 2.25])
    sampler = RepeatFactorTrainingSampler(factors, seed=0)
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    epochs = 1000
    for _ in range(epochs):
        counts += torch.bincount(sampler.epoch_indices(generator), minlength=3)
    mean = counts / epochs
    # Standard error of a Bernoulli(p) mean over 1000 draws is <= 0.016; allow 5 sigma
    # (floor or round-half rounding would be off by 0.25 or 0.5).
    torch.testing.assert_close(mean, factors, atol=0.08, rtol=0)
    one_epoch = sampler.epoch_indices(torch.Generator().manual_seed(3))
    assert (one_epoch == 2).sum() in (2, 3) and (one_epoch == 0).sum() == 1
    shards = [
        list(islice(RepeatFactorTrainingSampler(factors, seed=5, rank=r, world_size=2), 50))
        for r in range(2)
    ]
    assert shards[0] != shards[1] and set(shards[0]) | set(shards[1]) == {0, 1, 2}


def test_defaults_come_from_torch_distributed(tmp_path) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        sampler = TrainingSampler(10)  # seed drawn on rank 0 and broadcast
        assert (sampler.rank, sampler.world_size) == (0, 1)
        assert sorted(islice(sampler, 10)) == list(range(10))
        assert list(InferenceSampler(3)) == [0, 1, 2]
    finally:
        dist.destroy_process_group()
