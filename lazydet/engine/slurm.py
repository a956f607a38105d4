"""What a training run does at its end when it runs as a SLURM job started by submitit.

``python -m lazydet.train -m hydra/launcher=submitit_slurm ...`` (docs/slurm.md) runs each job as
``submitit``'s ``process_job``, which installs a handler for the preemption signal (USR2 unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) before the job starts. While the trainer runs it owns
SIGUSR2 and SIGTERM (``lazydet.engine.trainer``): the signal ends the run at the next step
boundary, *after* the checkpoint hook saved, and the trainer restores submitit's handler. Calling
submitit's handler from the signal itself would requeue and exit in the middle of a step, before
anything is saved; calling it after the save is what :func:`after_stop_signal` does:

- **preemption or time limit** (the submitit signal): rank 0 hands over to submitit's handler,
  which checkpoints the launcher call (``hydra_submitit_launcher``'s ``checkpoint``: the same job
  again), requeues the job (``scontrol requeue``) and exits. The requeued job composes the same
  config into the same run directory, and the checkpoint hook resumes from the newest
  checkpoint, at the iteration the signal stopped. Every rank then leaves with
  :class:`JobRequeued`, which nothing in the job catches: the job must not report a result (the
  sweep would take it for the job's end).
  Past ``max_num_timeout`` time limits, every rank raises :class:`JobTimedOut` instead.
- **SLURM requeues the job itself** (a partition that preempts without ``GraceTime`` sends the
  signal and SIGTERM together): every rank leaves with :class:`JobRequeued`, nothing is asked.
- **SIGTERM** otherwise (``scancel``, a node shutting down): raises :class:`JobCancelled`, one
  message naming the job, its state, the iteration and the checkpoint; the sweep records it as
  the job's failure.

Outside a submitit SLURM job (a local run, ``submitit_local``, plain ``srun``) nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from typing import Any

__all__ = [
    "JobCancelled",
    "JobRequeued",
    "JobTimedOut",
    "UnsupportedSubmitit",
    "after_stop_signal",
    "submitit_private",
    "submitit_slurm_handler",
]

logger = logging.getLogger(__name__)


class JobRequeued(BaseException):
    """This SLURM job was requeued after saving; the process ends without a result.

    A ``BaseException`` (like ``SystemExit``) so that the per-job error handling of a sweep, which
    records ``Exception`` and ``SystemExit`` as the job's outcome, lets it through; the process
    then exits with a one-line message and status 1 (see :func:`_quiet_excepthook`).
    """


class JobCancelled(RuntimeError):
    """The SLURM job was cancelled (``scancel``) or terminated by SLURM; a checkpoint was saved."""


class JobTimedOut(RuntimeError):
    """The SLURM job reached its time limit once more than ``max_num_timeout`` allows; a
    checkpoint was saved and the job is not requeued."""


# submitit releases whose private names used by ``submitit_private`` were checked.
SUBMITIT_TESTED_VERSIONS = ("1.5",)


class UnsupportedSubmitit(RuntimeError):
    """The installed submitit is not a release whose internals lazydet was checked against."""


def submitit_private(handler: Any = None) -> tuple[int, int | None]:
    """The two things lazydet needs from submitit's private API, and nothing else reaches it:
    ``(preemption signal, time-outs left)``.

    - the signal submitit's handler listens to: USR2, or what ``SUBMITIT_PREEMPT_SIGNAL`` names
      (``JobEnvironment._usr_sig()``);
    - for ``handler`` (a ``SignalHandler.checkpoint_and_try_requeue``), how many more time-outs
      the job may requeue after (``SignalHandler._delayed._timeout_countdown``); None without one.

    Raises UnsupportedSubmitit on a submitit release not in ``SUBMITIT_TESTED_VERSIONS``.
    """
    import submitit
    from submitit.core.job_environment import JobEnvironment

    if not any(submitit.__version__.startswith(v + ".") for v in SUBMITIT_TESTED_VERSIONS):
        raise UnsupportedSubmitit(
            f"submitit {submitit.__version__} is installed; lazydet's requeue on preemption was "
            f"checked with submitit {', '.join(SUBMITIT_TESTED_VERSIONS)}.x only. Install "
            "submitit~=1.5."
        )
    signal_number = int(JobEnvironment._usr_sig())
    if handler is None:
        return signal_number, None
    return signal_number, int(handler.__self__._delayed._timeout_countdown)


def _preempt_signal() -> int:
    return submitit_private()[0]


def submitit_slurm_handler() -> Any:
    """submitit's requeue handler (``SignalHandler.checkpoint_and_try_requeue``) when this process
    is a submitit SLURM job, else None.

    Read from the installed signal handler rather than the environment: a ``submitit_local`` job
    started inside a SLURM allocation sees ``SLURM_*`` variables too, but its handler's
    environment is not a ``SlurmJobEnvironment``.
    """
    if not os.environ.get("SUBMITIT_FOLDER"):  # set by submitit's process_job
        return None
    try:
        handler = signal.getsignal(_preempt_signal())
    except UnsupportedSubmitit:
        raise
    except (ImportError, RuntimeError):  # no submitit, or a bad SUBMITIT_PREEMPT_SIGNAL
        return None
    owner = getattr(handler, "__self__", None)
    env = getattr(owner, "env", None)
    if type(owner).__name__ != "SignalHandler" or type(env).__name__ != "SlurmJobEnvironment":
        return None
    return handler


def _scontrol_job() -> dict[str, str]:
    """``scontrol show job`` of this job as ``{"JobState": "RUNNING", "Restarts": "0", ...}``;
    empty when it cannot be asked (the answer only refines a message or a decision)."""
    job_id = os.environ.get("SLURM_JOB_ID", "")
    try:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def _requeued_by_slurm() -> bool:
    """True when SLURM itself is requeueing this job (preemption with ``PreemptMode=REQUEUE``):
    its restart count is above the one this run started with (``SLURM_RESTART_COUNT``)."""
    try:
        restarts = int(_scontrol_job().get("Restarts", "0"))
        return restarts > int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return False


def _quiet_excepthook(previous: Any) -> Any:
    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, JobRequeued):
            print(f"lazydet.train: {value}", file=sys.stderr, flush=True)
            return
        previous(kind, value, tb)

    return hook


def after_stop_signal(
    *,
    stop_signal: str,
    preempted_elsewhere: bool = False,
    iteration: int,
    max_iter: int,
    checkpoint: Any,
) -> None:
    """Called by ``lazydet.train.run`` when the trainer stopped early on a signal (after saving).
    ``preempted_elsewhere``: this rank saw no signal, another did (``Trainer.stopped_by_other_rank``);
    in a SLURM job that is the preemption reaching another task first.

    In a submitit SLURM job: requeue on the preemption signal (raises :class:`JobRequeued` on
    every rank), or raise :class:`JobCancelled` on SIGTERM. Elsewhere: returns and the caller
    reports the stop as before.
    """
    handler = submitit_slurm_handler()
    if handler is None:
        return
    job = handler.__self__.env
    preempt = _preempt_signal()
    # Rank 0 writes the checkpoint; the other ranks only know that it was written.
    saved = checkpoint or "written by rank 0"
    where = f"iteration {iteration} of {max_iter}; checkpoint {saved}"
    preempted = preempted_elsewhere or stop_signal == signal.Signals(preempt).name
    if (preempted or stop_signal == "SIGTERM") and _requeued_by_slurm():
        # A partition that preempts without a grace time sends the user signal and SIGTERM at
        # once, and SLURM requeues the job itself: nothing to ask, but no result either.
        sys.excepthook = _quiet_excepthook(sys.excepthook)
        logger.warning("SLURM job %s: preempted and requeued by SLURM at %s.", job.job_id, where)
        raise JobRequeued(
            f"SLURM job {job.job_id} (rank {job.global_rank}) was preempted at {where}. SLURM "
            "requeued the job; it resumes from that checkpoint when it starts again."
        )
    if preempted:
        owner = handler.__self__
        # submitit's own rule (SignalHandler.checkpoint_and_try_requeue), decided here on every
        # rank so that all of them end the same way: a time-out beyond max_num_timeout is the
        # job's end, a preemption always requeues.
        timed_out = bool(owner.has_timed_out())
        if submitit_private(handler)[1] - timed_out < 0:
            raise JobTimedOut(
                f"SLURM job {job.job_id} reached its time limit more times than "
                f"hydra.launcher.max_num_timeout allows; stopped at {where}. Raise "
                "hydra.launcher.max_num_timeout (or timeout_min) and run the same command with "
                "the same hydra.sweep.dir to resume from it."
            )
        sys.excepthook = _quiet_excepthook(sys.excepthook)
        if job.global_rank == 0:
            logger.warning(
                "SLURM job %s: %s (%s) at %s; requeuing.",
                job.job_id,
                stop_signal,
                "time limit" if timed_out else "preemption",
                where,
            )
            # Checkpoints the launcher call (the same job again), runs `scontrol requeue` and
            # exits with SystemExit.
            with contextlib.suppress(SystemExit):
                handler(preempt, None)
        raise JobRequeued(
            f"SLURM job {job.job_id} (rank {job.global_rank}) stopped by {stop_signal} at {where}. "
            "The job was requeued; it resumes from that checkpoint when it starts again."
        )
    if stop_signal == "SIGTERM":
        state = _scontrol_job().get("JobState", "unknown")
        raise JobCancelled(
            f"SLURM job {job.job_id} was cancelled (scancel, or SLURM ended it; JobState={state}) "
            f"at {where}. Run the same command with the same hydra.sweep.dir to resume from it."
        )
