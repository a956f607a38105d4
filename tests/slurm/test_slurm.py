"""``python -m lazydet.train -m hydra/launcher=submitit_slurm ...`` on a real SLURM.

Needs the single-node cluster of ``scripts/start_local_slurm.sh`` (partitions ``debug``, which
can be preempted, and ``high``); skipped with the reason when ``sinfo`` is missing, fails, or
shows other partitions. ``.ci/run`` starts the cluster and runs these tests on their own (they
share two CPUs: run them serially, ``-p no:xdist``).

The jobs train ``conf/slurm_tiny.py`` (a model of ~50 parameters on eight 32 px shapes images,
20 iterations of batch 2) so that each takes seconds; a requeue waits ~15-30 s for SLURM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from lazydet.data.datasets import generate_shapes

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
MAX_ITER = 20
PREEMPT_AFTER = 5  # the checkpoint a job must have written before it is preempted


def _slurm_missing() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here (sinfo/sbatch not found); scripts/start_local_slurm.sh starts one"
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s: slurmctld is not reachable"
    if result.returncode != 0:
        return f"sinfo failed ({result.stderr.strip()}): start scripts/start_local_slurm.sh"
    partitions = {line.split()[0].rstrip("*") for line in result.stdout.splitlines() if line}
    if not {"debug", "high"} <= partitions:
        return (
            f"this SLURM has partitions {sorted(partitions)}, not the debug/high pair of "
            "scripts/start_local_slurm.sh that these tests preempt with"
        )
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm() -> None:
    reason = _slurm_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm_shapes")
    generate_shapes(root, num_images=8, image_size=32, seed=1)
    return root


def _command(sweep_dir: Path, shapes: Path, name: str, tasks: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lazydet.train", "-m", "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug", f"hydra.launcher.tasks_per_node={tasks}",
        # Under 10 minutes submitit counts every signal as a time-out (and max_num_timeout=0
        # would then refuse to requeue): a preemption must look like one.
        "hydra.launcher.timeout_min=60", f"hydra.launcher.name={name}",
        f"hydra.sweep.dir={sweep_dir}", "conf=slurm_tiny",
        f"dataloader.train.dataset.json_file={shapes / 'annotations.json'}",
        f"dataloader.train.dataset.image_root={shapes}", *extra,
    ]  # fmt: skip


def _start(sweep_dir: Path, shapes: Path, *extra: str, tasks: int = 1):
    """Start a sweep; returns (process, job name)."""
    env = dict(os.environ)
    env["LAZYDET_CONFIG_PATH"] = str(HERE / "conf")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.pop("HYDRA_FULL_ERROR", None)
    name = f"lazydet_test_{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        _command(sweep_dir, shapes, name, tasks, *extra),
        cwd=sweep_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, name


def _finish(process: subprocess.Popen, name: str, timeout: float = 300) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        # A failed test must not leave jobs that hold the CPUs the next test needs.
        subprocess.run(["scancel", "--name", name], capture_output=True, check=False)
        if process.poll() is None:
            process.kill()
            process.communicate()


def _job_id(name: str, process: subprocess.Popen) -> str:
    out = subprocess.run(
        ["squeue", "-h", "--name", name, "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(out) == 1, (out, process.poll())
    return out[0]


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the sweep ended before {path} appeared: {process.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return state.get("model", state)


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shapes) -> Path:
    """An uninterrupted 2-task job: the run every preempted one must reproduce."""
    sweep = tmp_path_factory.mktemp("reference") / "sweep"
    process, name = _start(
        sweep, shapes, "+evaluator._target_=slurm_tiny.SaveRankWeights",
        f"+evaluator.out={sweep}/weights", tasks=2,
    )  # fmt: skip
    out, err = _finish(process, name)
    assert process.returncode == 0, err
    assert "1 jobs: 1 ok, 0 failed" in out, out + err
    return sweep


def test_a_two_job_sweep_writes_each_jobs_metrics_in_its_directory(tmp_path, shapes):
    sweep = tmp_path / "sweep"
    process, name = _start(sweep, shapes, "optimizer.lr=0.01,0.02")
    out, err = _finish(process, name)
    assert process.returncode == 0, err
    assert "2 jobs: 2 ok, 0 failed" in out, out + err
    finals = []
    for num, lr in enumerate(("0.01", "0.02")):
        run_dir = sweep / str(num)
        assert f"lr: {lr}" in (run_dir / "config.yaml").read_text()
        assert _metrics(run_dir)[-1]["iteration"] == MAX_ITER
        assert json.loads((run_dir / "lazydet_job.json").read_text())["ok"] is True
        finals.append(_weights(run_dir / "model_final.pth"))
    # Two different learning rates: each directory holds its own job's run.
    assert not torch.equal(finals[0]["cls.weight"], finals[1]["cls.weight"])
    # One SLURM array task per job, each with its own log.
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2


def test_two_tasks_train_with_gloo_ddp_and_end_with_identical_weights(reference):
    run_dir = reference / "0"
    rank0 = _weights(reference / "weights" / "weights_rank0.pt")
    rank1 = _weights(reference / "weights" / "weights_rank1.pt")
    _assert_equal(rank0, rank1)  # DDP averaged the gradients: bit-identical replicas
    _assert_equal(rank0, _weights(run_dir / "model_final.pth"))
    assert torch.load(run_dir / "model_final.pth", weights_only=True)["world_size"] == 2
    assert (run_dir / "log.rank1.txt").is_file()  # the second rank ran in the job
    assert _metrics(run_dir)[-1]["iteration"] == MAX_ITER


@pytest.mark.parametrize("how", ["scancel_usr2", "high_priority_partition"])
def test_a_preempted_job_is_requeued_and_ends_as_if_uninterrupted(tmp_path, shapes, reference, how):
    sweep = tmp_path / "sweep"
    process, name = _start(
        sweep, shapes, "model.step_seconds=0.3",
        "+evaluator._target_=slurm_tiny.SaveRankWeights", f"+evaluator.out={sweep}/weights",
        tasks=2,
    )  # fmt: skip
    try:
        _wait_for(sweep / "0" / f"model_{PREEMPT_AFTER:07d}.pth", process)
        job = _job_id(name, process)
        if how == "scancel_usr2":
            # What SLURM sends before a time limit (submitit's --signal=USR2@signal_delay_s).
            subprocess.run(["scancel", "--signal=USR2", job], check=True)
        else:
            # The job holds both CPUs; a job of the high partition needs one and preempts it
            # (without GraceTime: USR2 and SIGTERM at once, and SLURM requeues the job).
            subprocess.run(
                ["sbatch", "-p", "high", "-n1", "-J", name, "-o", "/dev/null", "--wrap", "sleep 2"],
                check=True,
                capture_output=True,
            )
    finally:
        out, err = _finish(process, name)
    assert process.returncode == 0, err
    assert "1 jobs: 1 ok, 0 failed" in out, out + err
    run_dir = sweep / "0"
    log = (run_dir / "log.txt").read_text()
    assert "SIGUSR2 received" in log, log
    if how == "scancel_usr2":  # USR2 alone: the job asks submitit to requeue it
        assert "SIGUSR2 (preemption) at iteration" in log and "requeuing." in log, log
    else:  # no GraceTime: USR2 and SIGTERM together, and SLURM requeues the job itself
        assert "preempted and requeued by SLURM at iteration" in log, log
    resumed = [line for line in log.splitlines() if "Resumed from" in line]
    assert len(resumed) == 1, log
    at = int(resumed[0].rsplit(" ", 1)[1])
    assert PREEMPT_AFTER <= at < MAX_ITER  # stopped mid-training, resumed where it stopped
    assert resumed[0].split("Resumed from ")[1].startswith(str(run_dir / f"model_{at:07d}.pth"))
    # The same world size resumes the RNG and the data stream at the exact sample, so the run
    # ends bit-identical to the uninterrupted one: no tolerance.
    _assert_equal(
        _weights(run_dir / "model_final.pth"), _weights(reference / "0" / "model_final.pth")
    )
    _assert_equal(
        _weights(sweep / "weights" / "weights_rank0.pt"),
        _weights(sweep / "weights" / "weights_rank1.pt"),
    )
    assert torch.load(run_dir / "model_final.pth", weights_only=True)["iteration"] == MAX_ITER
    # Training lines (the evaluator adds its own at the end): each iteration once, in order.
    logged = [m["iteration"] for m in _metrics(run_dir) if "total_loss" in m]
    assert logged == sorted(set(logged)) and logged[-1] == MAX_ITER


def test_a_failing_job_reports_its_error_and_traceback(tmp_path, shapes):
    sweep = tmp_path / "sweep"
    process, name = _start(sweep, shapes, "model.fail_at=3")
    out, err = _finish(process, name)
    assert process.returncode == 1, out + err
    # The console: the job, its overrides and the error.
    assert "1 jobs: 0 ok, 1 failed" in err
    assert "model.fail_at=3: RuntimeError: SleepyTiny fails on purpose at call 3" in err
    assert f"job #0's log: {sweep / '0' / 'log.txt'}" in err  # where the traceback is
    # The job's log: the traceback down to the line that raised.
    log = (sweep / "0" / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log
    assert 'raise RuntimeError(f"SleepyTiny fails on purpose' in log


def test_scancel_reports_a_cancelled_job_and_keeps_its_checkpoint(tmp_path, shapes):
    sweep = tmp_path / "sweep"
    process, name = _start(sweep, shapes, "model.step_seconds=0.3")
    try:
        _wait_for(sweep / "0" / f"model_{PREEMPT_AFTER:07d}.pth", process)
        subprocess.run(["scancel", _job_id(name, process)], check=True)
    finally:
        out, err = _finish(process, name)
    assert process.returncode == 1, out + err
    assert "1 jobs: 0 ok, 1 failed" in err
    assert "JobCancelled: SLURM job" in err and "was cancelled" in err, err
    saved = (sweep / "0" / "last_checkpoint").read_text().strip()
    state = torch.load(sweep / "0" / saved, weights_only=True)
    assert PREEMPT_AFTER <= state["iteration"] < MAX_ITER
    assert signal.SIGTERM.name in (sweep / "0" / "log.txt").read_text()
