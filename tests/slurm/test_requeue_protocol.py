"""``lazydet.engine.slurm.after_stop_signal`` against submitit's real signal handler, without SLURM.

submitit's ``process_job`` installs the handler; here the same ``_handle_signals`` call installs
it for a job environment read from SLURM-like variables, and only ``scontrol requeue`` (the
environment's ``_requeue``) is replaced by a recorder. tests/slurm/test_slurm.py runs the whole
protocol on a real cluster.
"""

from __future__ import annotations

import signal
import sys

import pytest
from submitit.core.utils import DelayedSubmission
from submitit.slurm.slurm import SlurmJobEnvironment

from lazydet.engine import slurm
from lazydet.engine.slurm import JobCancelled, JobRequeued, JobTimedOut, after_stop_signal


class Resubmittable:
    """Stands for the Hydra launcher: callable, with submitit's ``checkpoint`` protocol."""

    def __call__(self, value: str) -> str:
        return value

    def checkpoint(self, value: str) -> DelayedSubmission:
        return DelayedSubmission(self, value)


@pytest.fixture
def submitit_job(tmp_path, monkeypatch):
    def install(*, timeout_min: int = 60, countdown: int = 0, rank: int = 0):
        for key, value in {
            "SUBMITIT_FOLDER": str(tmp_path), "SLURM_JOB_ID": "77", "SLURM_PROCID": str(rank),
            "SLURM_NTASKS": "2", "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
            "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "localhost",
        }.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
        monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # after_stop_signal wraps it
        monkeypatch.setattr(SlurmJobEnvironment, "_requeue", lambda self, c: requeued.append(c))
        # What `scontrol show job` would say: running, never restarted.
        monkeypatch.setattr(slurm, "_scontrol_job", lambda: dict(scontrol))
        env = SlurmJobEnvironment()
        delayed = DelayedSubmission(Resubmittable(), "job")
        delayed.set_timeout(timeout_min, countdown)
        env._handle_signals(env.paths, delayed)
        return env.paths

    requeued: list[int] = []
    scontrol = {"JobState": "RUNNING", "Restarts": "0"}
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)}
    yield install, requeued, scontrol
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _stop(name: str) -> None:
    after_stop_signal(
        stop_signal=name, iteration=7, max_iter=20, checkpoint="run/model_0000007.pth"
    )


def test_outside_a_submitit_job_nothing_changes(monkeypatch):
    monkeypatch.delenv("SUBMITIT_FOLDER", raising=False)
    for name in ("SIGUSR2", "SIGTERM", "SIGINT"):
        assert _stop(name) is None


def test_a_preempted_job_is_checkpointed_and_requeued_after_the_save(submitit_job):
    install, requeued, _scontrol = submitit_job
    paths = install(timeout_min=60, countdown=0)  # a preemption: not counted as a time-out
    with pytest.raises(JobRequeued, match=r"SLURM job 77 \(rank 0\) stopped by SIGUSR2 at itera"):
        _stop("SIGUSR2")
    assert requeued == [0]
    # The job to run again is the launcher call itself, with its arguments.
    resubmitted = DelayedSubmission.load(paths.submitted_pickle)
    assert isinstance(resubmitted.function, Resubmittable) and resubmitted.args == ("job",)


def test_other_ranks_leave_without_requeuing(submitit_job):
    install, requeued, _scontrol = submitit_job
    install(rank=1)
    with pytest.raises(JobRequeued, match=r"rank 1.*checkpoint written by rank 0"):
        after_stop_signal(stop_signal="SIGUSR2", iteration=7, max_iter=20, checkpoint=None)
    assert requeued == []


def test_time_limits_count_against_max_num_timeout(submitit_job):
    install, requeued, _scontrol = submitit_job
    # Under 10 minutes submitit takes every signal for a time-out.
    install(timeout_min=5, countdown=1)
    with pytest.raises(JobRequeued):
        _stop("SIGUSR2")
    assert requeued == [0]  # one time-out left before, none after
    install(timeout_min=5, countdown=0)
    with pytest.raises(JobTimedOut, match="hydra.launcher.max_num_timeout"):
        _stop("SIGUSR2")
    assert requeued == [0]


def test_scancel_is_reported_as_a_cancelled_job(submitit_job):
    install, requeued, scontrol = submitit_job
    install()
    scontrol["JobState"] = "CANCELLED"
    with pytest.raises(JobCancelled, match=r"job 77 was cancelled .*JobState=CANCELLED\) at itera"):
        _stop("SIGTERM")
    assert _stop("SIGINT") is None  # Ctrl-C in an interactive job: the usual message
    assert requeued == []


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR2"])
def test_a_job_that_slurm_requeues_itself_leaves_without_a_result(submitit_job, name):
    # PreemptMode=REQUEUE without GraceTime: USR2 and SIGTERM arrive together and SLURM has
    # already counted a restart; asking for another requeue would fail.
    install, requeued, scontrol = submitit_job
    install()
    scontrol.update(JobState="COMPLETING", Restarts="1")
    with pytest.raises(JobRequeued, match="was preempted at iteration 7 of 20"):
        _stop(name)
    assert requeued == []


def test_a_stop_seen_on_another_rank_requeues_by_the_flag(submitit_job):
    # This rank saw no signal; the trainer says so with its flag, whatever text names the stop.
    install, requeued, _scontrol = submitit_job
    install(rank=0)
    with pytest.raises(JobRequeued):
        after_stop_signal(
            stop_signal="a signal on another rank",
            preempted_elsewhere=True,
            iteration=7,
            max_iter=20,
            checkpoint="run/model_0000007.pth",
        )
    assert requeued == [0]


def test_submitit_private_api_is_version_checked(submitit_job, monkeypatch):
    import submitit
    from submitit.core import job_environment as slurm_environment

    install, _requeued, _scontrol = submitit_job
    install(timeout_min=5, countdown=3)
    handler = slurm.submitit_slurm_handler()
    assert slurm.submitit_private(handler) == (int(signal.SIGUSR2), 3)
    # submitit reads SUBMITIT_PREEMPT_SIGNAL once, into JobEnvironment.USR_SIG.
    monkeypatch.setattr(slurm_environment.JobEnvironment, "USR_SIG", "USR1")
    assert slurm.submitit_private()[0] == int(signal.SIGUSR1)
    monkeypatch.setattr(submitit, "__version__", "2.0.0")
    with pytest.raises(slurm.UnsupportedSubmitit, match=r"submitit 2\.0\.0 .*1\.5\.x"):
        slurm.submitit_private()
