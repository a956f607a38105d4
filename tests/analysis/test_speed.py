import pytest
import torch
from torch import nn

from lazydet.analysis.speed import benchmark_steps, inference_step, train_step


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        out = self.linear(torch.stack([d["x"] for d in batch])).mean()
        return {"loss": out} if self.training else out


def _loader(n_batches, batch_size):
    return [[{"x": torch.rand(4)} for _ in range(batch_size)] for _ in range(n_batches)]


def test_counts_and_fields_inference():
    model = _Counting()
    result = benchmark_steps(
        inference_step(model),
        _loader(2, 3),
        mode="inference",
        device=torch.device("cpu"),
        warmup=2,
        iters=3,
        runs=4,
        threads=1,
        data_loading=True,  # 2 + 3 * 4 = 14 steps over a loader of 2 batches: it restarts
    )
    assert model.calls == 2 + 3 * 4
    assert len(result.images_per_s) == 4 and all(s > 0 for s in result.images_per_s)
    assert result.threads == 1 and result.batch_size == 3
    assert result.spread[0] <= result.median <= result.spread[1]
    assert set(result.as_dict()) >= {"median", "min", "max", "threads", "images_per_s"}
    assert "median of 4 runs of 3 iterations after 2 warm-up" in str(result)


def test_train_step_updates_weights_and_bad_counts_are_refused():
    model = _Counting()
    before = model.linear.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def benchmark(**counts):
        step, loader = train_step(model, optimizer), _loader(1, 2)
        return benchmark_steps(step, loader, mode="train", device=torch.device("cpu"), **counts)

    benchmark(warmup=0, iters=1, runs=1)
    assert model.calls == 1 and not torch.equal(before, model.linear.weight)
    with pytest.raises(ValueError, match="iters=0"):
        benchmark(iters=0)


def test_benchmark_config_times_a_real_experiment():
    """``python -m lazydet.analyze speed``'s path: a composed experiment, its own test loader and
    model (random weights), one image per step."""
    from lazydet.analysis.speed import benchmark_config
    from lazydet.config import compose

    cfg = compose("quickstart", ["train.init_checkpoint=random"])
    result = benchmark_config(cfg, mode="inference", device="cpu", warmup=1, iters=2, runs=2)
    assert len(result.images_per_s) == 2 and all(s > 0 for s in result.images_per_s)
    assert result.batch_size == 1 and result.spread[0] <= result.median <= result.spread[1]
    with pytest.raises(ValueError, match="mode='eval'"):
        benchmark_config(cfg, mode="eval")
