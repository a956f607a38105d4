"""DDP for real on CPU: 2 gloo processes spawned by launch(), by torchrun and as SLURM tasks.

The per-rank functions live at module level: spawned processes import them by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lazydet.config import compose
from lazydet.data import build_train_loader
from lazydet.engine.launch import launch, linear_scaling, wrap_model
from lazydet.engine.run import apply_linear_scaling
from lazydet.engine.trainer import Trainer, unwrap_model
from lazydet.utils import comm

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_RECORDS = 24


def _records() -> list[dict]:
    """A regression data set: y = <w, x> + noise, one sample per record."""
    generator = torch.Generator().manual_seed(123)
    x = torch.randn(NUM_RECORDS, 8, generator=generator)
    y = x @ torch.linspace(-1, 1, 8) + 0.1 * torch.randn(NUM_RECORDS, generator=generator)
    return [{"index": i, "x": x[i], "y": y[i]} for i in range(NUM_RECORDS)]


def _to_item(record: dict) -> dict:
    # AspectRatioGroupedBatches reads the image size; a 1x1 "image" keeps all items in one group.
    return {"image": torch.zeros(1, 1, 1), **record}


def _loader(total_batch_size: int):
    return build_train_loader(
        dataset=_records(), mapper=_to_item, total_batch_size=total_batch_size, seed=7
    )


class _Regressor(nn.Module):
    """No batch statistics: the gradient of the batch mean is the mean of per-sample gradients,
    so 2 ranks x 2 samples and 1 process x 4 samples compute the same update."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([item["x"] for item in batch])
        y = torch.stack([item["y"] for item in batch])
        return {"loss_mse": F.mse_loss(self.net(x).squeeze(1), y)}


def _describe_rank() -> dict:
    return comm.all_gather_object(
        {
            "rank": comm.get_rank(),
            "world_size": comm.get_world_size(),
            "local_rank": comm.get_local_rank(),
            "backend": torch.distributed.get_backend(),
            "threads": torch.get_num_threads(),
        }
    )


def _indices_seen(total_batch_size: int, steps: int) -> list[list[list[int]]]:
    """Per rank, per step: the record indices of the batch this rank got."""
    batches = iter(_loader(total_batch_size))
    mine = [[item["index"] for item in next(batches)] for _ in range(steps)]
    return comm.all_gather_object(mine)


def _train(total_batch_size: int, iters: int) -> list[dict[str, torch.Tensor]]:
    """Train the regressor with the Trainer; every rank's final weights (rank order)."""
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = wrap_model(_Regressor())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(
        model=model, data_loader=_loader(total_batch_size), optimizer=optimizer, max_iter=iters
    )
    trainer.train(handle_signals=False)
    state = {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}
    return comm.all_gather_object(state)


def _all_checks(total_batch_size: int, steps: int, iters: int) -> dict:
    # One spawn for the three checks below: starting 2 Python processes is the slow part.
    return {
        "ranks": _describe_rank(),
        "indices": _indices_seen(total_batch_size, steps),
        "weights": _train(total_batch_size, iters),
    }


@pytest.fixture(scope="module")
def two_ranks() -> dict:
    return launch(_all_checks, num_processes=2, args=(4, 5, 6))


def test_launch_spawns_two_gloo_ranks(two_ranks):
    ranks = two_ranks["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["local_rank"] for r in ranks] == [0, 1]
    assert {r["world_size"] for r in ranks} == {2}
    assert {r["backend"] for r in ranks} == {"gloo"}
    # Each of the 2 processes gets its share of the cores, not all of them.
    if "OMP_NUM_THREADS" not in os.environ:
        assert all(r["threads"] == max(1, (os.cpu_count() or 1) // 2) for r in ranks)
    assert not torch.distributed.is_initialized()  # the parent never joined a group


def test_ranks_see_disjoint_data_that_make_up_the_single_process_batches(two_ranks):
    per_rank = two_ranks["indices"]
    steps = len(per_rank[0])
    (single,) = _indices_seen(4, steps)  # one process, the same global batch of 4
    for step in range(steps):
        rank0, rank1 = per_rank[0][step], per_rank[1][step]
        assert len(rank0) == len(rank1) == 2  # the global batch split in two
        assert not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == sorted(single[step])
    # Over the 20 samples (less than one epoch of 24) no record is seen twice.
    everything = [i for rank in per_rank for step in rank for i in step]
    assert len(everything) == len(set(everything)) == 20


def test_ddp_matches_one_process_at_the_same_global_batch(two_ranks):
    ranks = two_ranks["weights"]
    (single,) = _train(4, 6)
    (smaller_batch,) = _train(2, 6)
    torch.manual_seed(0)
    initial = _Regressor().state_dict()
    for key in single:
        # DDP: identical updates on every rank (same start, all-reduced gradients): bit-equal.
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        # Against one process: the same samples and the same mean gradient, summed in another
        # order ((g0 + g1) / 2 of two 2-sample means vs one 4-sample mean), so only float32
        # rounding differs: ~1e-7 relative per step, a few 1e-7 after 6 steps. 1e-5 leaves
        # margin while still far below the training signal (the weights move by > 1e-2).
        torch.testing.assert_close(ranks[0][key], single[key], rtol=1e-5, atol=1e-5)
    moved = max((single[k] - initial[k]).abs().max().item() for k in single)
    assert moved > 1e-2
    # The tolerance does discriminate: a different global batch gives different weights.
    differs = max((single[k] - smaller_batch[k]).abs().max().item() for k in single)
    assert differs > 1e-3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_RANK_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import torch
    from lazydet.engine.launch import launch
    from lazydet.utils import comm
    from lazydet.utils.logging import setup_logging

    def main(out_dir):
        logger = setup_logging(out_dir)
        logger.info("hello from rank %d of %d", comm.get_rank(), comm.get_world_size())
        total = torch.tensor([float(comm.get_rank() + 1)])
        comm.all_reduce_mean(total)
        logger.info("mean of ranks+1: %.1f", total.item())

    launch(main, args=(sys.argv[1],))
    """
)


def _check_two_rank_run(result: subprocess.CompletedProcess, out_dir: Path) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    # One console copy: rank 0 prints, rank 1 only writes its file.
    assert "hello from rank 0 of 2" in result.stdout
    assert "rank 1" not in result.stdout
    assert "mean of ranks+1: 1.5" in result.stdout
    rank0 = (out_dir / "log.txt").read_text()
    rank1 = (out_dir / "log.rank1.txt").read_text()
    assert "hello from rank 0 of 2" in rank0 and "[rank0]" in rank0
    assert "hello from rank 1 of 2" in rank1 and "rank 0" not in rank1


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU even where a GPU exists
    return env


def test_torchrun_starts_ranks_that_launch_joins(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    out_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
         f"--master-port={_free_port()}", str(script), str(out_dir)],
        capture_output=True, text=True, timeout=240, env=_clean_env(), cwd=REPO_ROOT,
    )  # fmt: skip
    _check_two_rank_run(result, out_dir)


@pytest.mark.slow
def test_slurm_tasks_become_ranks(tmp_path):
    # What srun sets for a 2-task step on one node; submitit's environment reads the same names.
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    out_dir = tmp_path / "run"
    env = _clean_env()
    env.update(
        SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_JOB_NUM_NODES="1",
        SLURM_NODEID="0",
        SLURM_JOB_NODELIST="localhost", MASTER_PORT=str(_free_port()),
    )  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(out_dir)],
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    stdout = "".join(out for out, _ in outputs)
    stderr = "".join(err for _, err in outputs)
    code = max(p.returncode for p in procs)
    _check_two_rank_run(subprocess.CompletedProcess([], code, stdout, stderr), out_dir)


def _fail_on_rank_one() -> None:
    if comm.get_rank() == 1:
        raise ValueError("rank 1 found a bad value in dataloader.train.total_batch_size")
    comm.synchronize()  # rank 0 waits in a collective: launch must not hang on it


def test_a_failing_rank_raises_its_own_error_in_the_caller():
    with pytest.raises(ValueError, match="rank 1 found a bad value"):
        launch(_fail_on_rank_one, num_processes=2)


def _wait_for_sigterm(ready_dir: str) -> list[bool]:
    received = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: received.set())
    Path(ready_dir, f"rank{comm.get_rank()}").touch()
    got = received.wait(timeout=120)
    return comm.all_gather_object(got)


@pytest.mark.slow
def test_sigterm_to_the_parent_reaches_every_rank(tmp_path):
    # `kill PID` of the command must reach the ranks (so they save), not kill the parent.
    def send_when_ready() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(list(tmp_path.iterdir())) < 2:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_ready, daemon=True)
    sender.start()
    assert launch(_wait_for_sigterm, num_processes=2, args=(str(tmp_path),)) == [True, True]
    sender.join()


def test_launch_refuses_bad_settings(monkeypatch):
    with pytest.raises(ValueError, match="train.num_processes=0"):
        launch(_describe_rank, num_processes=0)
    with pytest.raises(TypeError, match="picklable"):
        launch(lambda: None, num_processes=2)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="WORLD_SIZE, MASTER_ADDR, MASTER_PORT"):
        launch(_describe_rank)
    for key, value in (("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="launcher decides the number of processes"):
        launch(_describe_rank, num_processes=2)


def test_one_process_runs_in_place_without_a_group():
    assert launch(comm.get_world_size, num_processes=1) == 1
    model = nn.Linear(2, 2)
    assert wrap_model(model) is model  # no DDP wrapper for one process


def test_linear_scaling_rule():
    # A config written for 8 processes (batch 16, lr 0.02) run on 2: per-process batch kept.
    lr, batch, iter_factor = linear_scaling(
        lr=0.02, total_batch_size=16, reference_world_size=8, world_size=2
    )
    assert (lr, batch, iter_factor) == (pytest.approx(0.005), 4, 4.0)
    with pytest.raises(ValueError, match="not divisible"):
        linear_scaling(lr=0.02, total_batch_size=10, reference_world_size=4, world_size=2)


def test_reference_world_size_rescales_the_config():
    cfg = compose("quickstart")
    lr, batch, max_iter = (
        cfg.optimizer.lr,
        cfg.dataloader.train.total_batch_size,
        cfg.schedule.max_iter,
    )
    warmup = cfg.schedule.lr_scheduler.milestones[0]
    steps = list(cfg.schedule.lr_scheduler.schedulers[1].milestones)
    apply_linear_scaling(cfg, reference_world_size=1, world_size=2)
    assert cfg.optimizer.lr == pytest.approx(2 * lr)
    assert cfg.dataloader.train.total_batch_size == 2 * batch
    assert cfg.schedule.max_iter == max_iter // 2
    assert cfg.schedule.lr_scheduler.milestones == [warmup // 2]
    assert cfg.schedule.lr_scheduler.schedulers[0].total_iters == warmup // 2
    assert list(cfg.schedule.lr_scheduler.schedulers[1].milestones) == [s // 2 for s in steps]
