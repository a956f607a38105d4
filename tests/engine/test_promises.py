"""What a stopped, resumed or multi-process run relies on, each pinned against a planted bug
(issue #20, point 7): a stop signal saves a checkpoint of the iteration it stopped at; the
GradScaler state survives a save and a resume; every rank is seeded ``train.seed + rank``; a
SLURM job's rendezvous port is a function of its job id; a stop seen by one rank stops every
rank at the same iteration, saved once, and counts as a preemption on the ranks that saw none.

(That the pointer names only complete, fsynced checkpoints and is replaced atomically is
tests/engine/test_checkpointer.py::test_the_pointer_names_only_complete_durable_checkpoints.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lazydet.engine.checkpointer import FINAL_CHECKPOINT, POINTER_FILE, Checkpointer, periodic_name
from lazydet.engine.hooks import CheckpointHook
from lazydet.engine.trainer import Trainer
from lazydet.utils import comm


class _SignalAt(nn.Module):
    """A linear regressor that sends ``signum`` to its own process during step ``at`` (0-based),
    after touching ``marker`` (whose mtime is then the signal's time on the file system's clock).
    """

    def __init__(self, *, at: int | None = None, signum: int = signal.SIGTERM, marker=None):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.at, self.signum, self.marker = at, signum, marker
        self.calls = 0

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.calls == self.at:
            if self.marker is not None:
                Path(self.marker).touch()
            os.kill(os.getpid(), self.signum)
        self.calls += 1
        x, y = batch
        return {"loss_mse": F.mse_loss(self.linear(x).squeeze(1), y)}


def _batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    while True:
        x = torch.randn(4, 4, generator=generator)
        yield x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0])


# ---------------------------------------------------------------------- a stop signal saves
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_a_checkpoint_of_the_iteration_it_stopped_at(tmp_path, signum):
    marker = tmp_path / "signal_sent"
    model = _SignalAt(at=6, signum=signum, marker=marker)  # during the 7th step
    checkpointer = Checkpointer(tmp_path, max_to_keep=5)
    trainer = Trainer(
        model=model,
        data_loader=_batches(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        max_iter=20,
        hooks=[CheckpointHook(checkpointer, period=5)],  # a periodic file at 5, before the stop
    )
    trainer.train()
    assert trainer.stop_signal == signal.Signals(signum).name and not trainer.finished
    stopped_at = trainer.completed_iters
    assert stopped_at == 7  # the step under way when the signal came is finished, then it stops
    named = (tmp_path / POINTER_FILE).read_text().strip()
    assert named == periodic_name(stopped_at)  # not model_0000005.pth, the earlier file
    saved = tmp_path / named
    assert saved.stat().st_mtime_ns >= marker.stat().st_mtime_ns  # written after the signal
    state = torch.load(saved, weights_only=True)
    assert state["iteration"] == stopped_at
    for key, value in model.state_dict().items():  # the weights as they were at the stop
        assert torch.equal(state["model"][key], value), key
    assert not (tmp_path / FINAL_CHECKPOINT).exists()


# ---------------------------------------------------------------------- GradScaler state
def _scaled_run(run_dir: Path, max_iter: int) -> Trainer:
    """A run whose loss goes through a GradScaler (CPU: ``GradScaler("cpu")``; the trainer
    creates one itself only for fp16 on CUDA) that doubles its scale every 3 steps."""
    torch.manual_seed(0)
    model = _SignalAt()
    trainer = Trainer(
        model=model,
        data_loader=_batches(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        max_iter=max_iter,
        hooks=[CheckpointHook(Checkpointer(run_dir), period=4)],
    )
    if any(run_dir.glob("model_*.pth")):
        # A resume: a scaler with torch's defaults, all of whose state must come from the file.
        trainer.scaler = torch.amp.GradScaler("cpu")
    else:
        trainer.scaler = torch.amp.GradScaler(
            "cpu", init_scale=2.0**4, growth_factor=2.0, growth_interval=3
        )
    trainer.train(handle_signals=False)
    return trainer


def _scaler_values(scaler: torch.amp.GradScaler) -> tuple[float, int, int]:
    state = scaler.state_dict()
    return state["scale"], state["_growth_tracker"], state["growth_interval"]


def test_the_grad_scaler_state_is_saved_and_restored(tmp_path) -> None:
    uninterrupted = _scaled_run(tmp_path / "whole", max_iter=10)
    # 10 steps without overflow, growth every 3: 2**4 -> 2**7, one step into the next interval.
    assert _scaler_values(uninterrupted.scaler) == (2.0**7, 1, 3)

    first = _scaled_run(tmp_path / "resumed", max_iter=7)
    saved = torch.load(tmp_path / "resumed" / FINAL_CHECKPOINT, weights_only=True)
    assert (saved["scaler"]["scale"], saved["scaler"]["_growth_tracker"]) == (2.0**6, 1)
    assert _scaler_values(first.scaler) == (2.0**6, 1, 3)

    resumed = _scaled_run(tmp_path / "resumed", max_iter=10)  # resumes from iteration 7
    assert resumed.start_iter == 7
    assert _scaler_values(resumed.scaler) == _scaler_values(uninterrupted.scaler)


# ---------------------------------------------------------------------- seeds per rank
def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_each_rank_is_seeded_with_the_seed_plus_its_rank(tmp_path, monkeypatch) -> None:
    from lazydet.engine import run as run_module

    monkeypatch.setattr("lazydet.utils.logging.setup_logging", lambda *a, **k: None)
    # What building draws (the initial weights) and what training draws (dropout, sampling).
    monkeypatch.setattr(run_module, "build", lambda cfg: {"init_checkpoint": None, "w": _draws()})
    monkeypatch.setattr(
        run_module, "train_built", lambda cfg, built, out, **_: (built["w"], _draws())
    )
    cfg = {"train": {"seed": 11}}
    per_rank = {}
    for rank in (0, 1, 2):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: 3)
        per_rank[rank] = run_module.train_on_this_rank(cfg, tmp_path)
    # The same initial weights on every rank; then seed + rank, exactly.
    assert per_rank[0][0] == per_rank[1][0] == per_rank[2][0]
    for rank, (_, draws) in per_rank.items():
        random.seed(11 + rank), np.random.seed(11 + rank), torch.manual_seed(11 + rank)
        assert draws == _draws(), rank
    assert len({str(draws) for _, draws in per_rank.values()}) == 3


# ---------------------------------------------------------------------- the SLURM port
_SLURM_TASK = {
    "SLURM_PROCID": "1",
    "SLURM_NTASKS": "2",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "0",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_JOB_NODELIST": "node[3-4]",
}
_PORT_OF = """
import json, os, sys
from lazydet.engine.launch import _export_slurm_environment
ports = {}
for job_id in sys.argv[1:]:
    os.environ.pop("MASTER_PORT", None)
    os.environ["SLURM_JOB_ID"] = job_id
    _export_slurm_environment()
    ports[job_id] = int(os.environ["MASTER_PORT"])
print(json.dumps(ports))
"""


def _slurm_port(job_id: str, **extra: str) -> tuple[int, str]:
    from lazydet.engine.launch import _export_slurm_environment

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    with mock.patch.dict(os.environ, {**clean, **_SLURM_TASK, "SLURM_JOB_ID": job_id, **extra}):
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None) if key not in extra else None
        assert _export_slurm_environment() == (1, 2, 1)
        return int(os.environ["MASTER_PORT"]), os.environ["MASTER_ADDR"]
    # mock.patch.dict restores the whole environment: RANK, WORLD_SIZE... do not leak.


def test_the_slurm_rendezvous_port_is_a_function_of_the_job_id() -> None:
    import json

    port, host = _slurm_port("4242")
    assert host == "node3"  # the first host of the job
    assert _slurm_port("4242")[0] == port  # every task of the job computes the same port
    ports = {job: _slurm_port(job)[0] for job in map(str, range(1000, 1200))}
    assert all(1024 < p < 65536 for p in ports.values())
    assert len(set(ports.values())) >= 180  # 200 jobs on one node rarely share a port
    # Another process (another task, another hash seed) derives the same ports.
    env = {**os.environ, **_SLURM_TASK, "PYTHONHASHSEED": "123"}
    other = subprocess.run(
        [sys.executable, "-c", _PORT_OF, "4242", "1000", "1199"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(other.stdout) == {"4242": port, "1000": ports["1000"], "1199": ports["1199"]}
    # A port the user set wins.
    assert _slurm_port("4242", MASTER_PORT="29123") == (29123, "node3")


# ---------------------------------------------------------------------- a stop on one rank
def _train_with_a_signal_on_rank_one(run_dir: str) -> list:
    """One rank of a 2-process run (train_built, as every run) where only rank 1 gets SIGUSR2
    (SLURM's preemption signal) during its 4th step."""
    from lazydet.engine.run import train_built
    from lazydet.engine.train_config import TrainConfig

    torch.manual_seed(0)
    model = _SignalAt(at=3 if comm.get_rank() == 1 else None, signum=signal.SIGUSR2)
    built = {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.01),
        "schedule": {"max_iter": 50},
        "dataloader": {"train": _batches()},
        "train": TrainConfig(device="cpu", checkpoint_period=1000, log_period=1000),
    }
    result = train_built({}, built, run_dir)
    return comm.all_gather_object(result)


@pytest.mark.slow  # two spawned processes: ~35 s on 2 busy cores
def test_a_stop_on_one_rank_stops_all_at_one_iteration_as_a_preemption(tmp_path, monkeypatch):
    from lazydet import train
    from lazydet.engine.launch import launch

    run_dir = tmp_path / "run"
    rank0, rank1 = launch(_train_with_a_signal_on_rank_one, num_processes=2, args=(str(run_dir),))
    assert (rank1.stop_signal, rank1.stopped_by_other_rank) == ("SIGUSR2", False)
    assert rank0.stop_signal and rank0.stopped_by_other_rank  # it saw nothing itself
    assert rank0.iteration == rank1.iteration == 4
    # One checkpoint of that iteration, written by rank 0 with both ranks' states.
    assert rank0.last_checkpoint == str(run_dir / periodic_name(4))
    assert (run_dir / POINTER_FILE).read_text().strip() == periodic_name(4)
    state = torch.load(run_dir / periodic_name(4), weights_only=True)
    assert state["iteration"] == 4 and state["world_size"] == 2 and len(state["ranks"]) == 2
    # The command hands the flag to the SLURM protocol, which requeues on it like a preemption
    # (tests/slurm/test_requeue_protocol.py::test_a_stop_seen_on_another_rank_requeues_by_the_flag).
    calls = []
    monkeypatch.setattr("lazydet.engine.slurm.after_stop_signal", lambda **kw: calls.append(kw))
    for result in (rank0, rank1):
        with pytest.raises(SystemExit):
            train._exit_after_stop(result)
    assert [c["preempted_elsewhere"] for c in calls] == [True, False]
    assert [c["iteration"] for c in calls] == [4, 4]
