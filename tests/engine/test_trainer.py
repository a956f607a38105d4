"""The training loop: hook order, gradient accumulation, clipping, AMP, the NaN guard."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch import nn

from lazydet.engine.hooks import HookBase
from lazydet.engine.trainer import NonFiniteLossError, Trainer


class LinearRegression(nn.Module):
    """No batch statistics, no randomness: a mean squared error over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        pred = self.linear(x)
        return {"loss_mse": ((pred - y) ** 2).mean(), "loss_l1": (pred - y).abs().mean() * 0.1}


def _samples(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(4, generator=g), "y": torch.randn(2, generator=g)} for _ in range(n)]


def _batches(samples: list[dict], size: int) -> list[list[dict]]:
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def _trainer(model: nn.Module, batches, max_iter: int, **kwargs) -> Trainer:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Trainer(
        model=model, data_loader=batches, optimizer=optimizer, max_iter=max_iter, **kwargs
    )


def test_gradient_accumulation_equals_one_big_batch() -> None:
    samples = _samples(24)
    torch.manual_seed(0)
    big = LinearRegression()
    small = LinearRegression()
    small.load_state_dict(big.state_dict())
    # 3 optimizer steps: batch 8 at once, or 4 micro-batches of 2 each.
    _trainer(big, _batches(samples, 8), 3).train(handle_signals=False)
    accumulated = _trainer(small, _batches(samples, 2), 3, grad_accum_steps=4)
    accumulated.train(handle_signals=False)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The logged losses are the means over the micro-batches, as for the big batch.
    assert set(accumulated.step_outputs["losses"]) == {"loss_mse", "loss_l1"}
    assert accumulated.completed_iters == 3
    # ... and without accumulation the same small batches give different weights.
    other = LinearRegression()
    torch.manual_seed(0)
    other.load_state_dict(LinearRegression().state_dict())
    _trainer(other, _batches(samples, 2), 3).train(handle_signals=False)
    assert not torch.allclose(other.linear.weight, big.linear.weight)


class Recorder(HookBase):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def before_train(self) -> None:
        self.log.append(f"{self.name}.before_train")

    def before_step(self) -> None:
        self.log.append(f"{self.name}.before_step{self.trainer.iter}")

    def after_step(self) -> None:
        self.log.append(f"{self.name}.after_step{self.trainer.iter}")

    def after_train(self) -> None:
        self.log.append(f"{self.name}.after_train")


def test_hooks_run_in_the_documented_order() -> None:
    log: list[str] = []
    trainer = _trainer(
        LinearRegression(),
        _batches(_samples(4), 2),
        2,
        hooks=[Recorder("a", log), Recorder("b", log)],
    )
    trainer.train(handle_signals=False)
    assert log == [
        "a.before_train", "b.before_train",
        "a.before_step0", "b.before_step0", "a.after_step0", "b.after_step0",
        "a.before_step1", "b.before_step1", "a.after_step1", "b.after_step1",
        "a.after_train", "b.after_train",
    ]  # fmt: skip
    assert trainer.finished and trainer.iter == 2


def test_clipping_bounds_the_gradient_norm() -> None:
    samples = [{"x": torch.full((4,), 100.0), "y": torch.zeros(2)} for _ in range(2)]
    trainer = _trainer(LinearRegression(), [samples], 1, clip_grad_norm=0.5)
    trainer.train(handle_signals=False)
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in trainer.model.parameters()])
    )
    assert norm.item() == pytest.approx(0.5, rel=1e-4)
    unclipped = _trainer(LinearRegression(), [samples], 1)
    unclipped.train(handle_signals=False)
    assert sum(p.grad.norm() for p in unclipped.model.parameters()) > 10


class AutocastProbe(LinearRegression):
    def forward(self, batch):
        self.seen = (torch.is_autocast_enabled("cpu"), self.linear(batch[0]["x"]).dtype)
        return super().forward(batch)


def test_bf16_autocast_on_cpu_and_fp16_needs_cuda() -> None:
    model = AutocastProbe()
    trainer = _trainer(model, _batches(_samples(4), 2), 2, amp="bf16")
    trainer.train(handle_signals=False)
    assert model.seen == (True, torch.bfloat16)
    assert model.linear.weight.dtype == torch.float32  # master weights stay float32
    with pytest.raises(ValueError, match=r"'fp16' needs a CUDA device.*train.amp=bf16"):
        _trainer(LinearRegression(), [], 1, amp="fp16")


class NaNAt(LinearRegression):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, batch):
        losses = super().forward(batch)
        self.calls += 1
        if self.calls > self.at:
            losses["loss_l1"] = losses["loss_l1"] + float("inf")
        return losses


def test_a_non_finite_loss_stops_naming_iteration_and_terms() -> None:
    model = NaNAt(3)
    trainer = _trainer(model, _batches(_samples(20), 2), 10)
    before = None

    class Snapshot(HookBase):
        def after_step(self) -> None:
            nonlocal before
            before = {k: v.clone() for k, v in self.trainer.model.state_dict().items()}

    trainer.register_hooks([Snapshot()])
    with pytest.raises(NonFiniteLossError, match=r"at iteration 3 .*loss_mse=[0-9.]+, loss_l1=inf"):
        trainer.train(handle_signals=False)
    # The step with the bad loss did not touch the weights.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not trainer.finished


def test_bad_loss_dicts_and_short_loaders_are_one_message() -> None:
    class ReturnsList(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, batch):
            return [self.w]

    with pytest.raises(TypeError, match="returned list in training mode"):
        _trainer(ReturnsList(), [[{}]], 1).train(handle_signals=False)
    with pytest.raises(RuntimeError, match="ran out of batches at iteration 2"):
        _trainer(LinearRegression(), _batches(_samples(4), 2), 5).train(handle_signals=False)


def test_request_stop_ends_at_a_step_boundary() -> None:
    class StopAt(HookBase):
        def after_step(self) -> None:
            if self.trainer.iter == 1 and not self.trainer.stop_signal:
                self.trainer.request_stop("SIGTERM")

    trainer = _trainer(LinearRegression(), _batches(_samples(20), 2), 10, hooks=[StopAt()])
    trainer.train(handle_signals=False)
    # The flag set during step 1 is seen after step 2 (agreed on between steps).
    assert trainer.stop_signal == "SIGTERM" and trainer.completed_iters == 3
    assert not trainer.finished


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_sigterm_and_sigusr2_stop_like_ctrl_c(signum) -> None:
    class SignalAt(HookBase):
        def after_step(self) -> None:
            if self.trainer.iter == 1:
                os.kill(os.getpid(), signum)

    previous = signal.getsignal(signum)
    trainer = _trainer(LinearRegression(), _batches(_samples(20), 2), 10, hooks=[SignalAt()])
    trainer.train()  # installs the handlers (main thread), restores them at the end
    assert trainer.stop_signal == signal.Signals(signum).name
    assert trainer.completed_iters == 3 and not trainer.finished
    assert signal.getsignal(signum) is previous


def test_a_stop_during_the_last_step_still_finishes_the_run() -> None:
    class StopAtLast(HookBase):
        def before_step(self) -> None:
            if self.trainer.iter == 2:
                self.trainer.request_stop("SIGINT")

    trainer = _trainer(LinearRegression(), _batches(_samples(6), 2), 3, hooks=[StopAtLast()])
    trainer.train(handle_signals=False)
    assert trainer.finished and trainer.stop_signal is None and trainer.completed_iters == 3
