"""A Hydra sweep's job statuses: each job records its outcome, the launcher sums them up.

``lazydet.train -m ...`` runs each job through Hydra's task function; a job that fails does not
stop the sweep. Jobs may run in other processes (submitit), so each writes ``lazydet_job.json``
(``write_job_status``) into its output directory, and :class:`SweepSummary`, a Hydra callback on
the launcher's side, reads them back at the end of the sweep (``finished_statuses``); the command prints
``sweep_summary`` and exits 1 when a job failed. A random sweep id (``start_sweep``) tells this
sweep's files from an earlier sweep's in the same directory.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from lazydet.config import ConfigError, InstantiationError

__all__ = [
    "JOB_STATUS_FILE",
    "SweepSummary",
    "failure_text",
    "finished_statuses",
    "job_log",
    "start_sweep",
    "sweep_summary",
    "write_job_status",
]

logger = logging.getLogger("lazydet.train")

JOB_STATUS_FILE = "lazydet_job.json"  # a sweep job's outcome, read back by SweepSummary
_SWEEP_ID_ENV = "LAZYDET_SWEEP_ID"  # tells this sweep's status files from an earlier sweep's


def failure_text(error: BaseException) -> str:
    """One line for a failed sweep job: lazydet's own message, else the exception's type and
    message (a ``SystemExit`` from ``run`` already printed its message: give its status)."""
    if isinstance(error, SystemExit):
        return f"exited with status {error.code}"
    if isinstance(error, (ConfigError, InstantiationError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def job_log(output_dir: Path, job_name: str) -> Path:
    """The job's log file, ``<output_dir>/log.txt`` (``lazydet.utils.logging``: Hydra's own job
    log file is turned off, the two held the same lines), else its output directory.
    ``job_name`` is kept for callers; the file no longer depends on it."""
    log = output_dir / "log.txt"
    return log if log.is_file() else output_dir


def _varying(overrides: list[list[str]]) -> list[set[str]]:
    """Per job, the overrides that not every job shares (what tells the jobs apart)."""
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [set(o) - common or set(o) for o in overrides]


def sweep_summary(statuses: list[dict[str, Any]]) -> str:
    """``"2 jobs: 1 ok, 1 failed (#0 depth=102: ValueError: ...)"``."""
    statuses = sorted(statuses, key=lambda s: s["num"])
    failed = [s for s in statuses if not s["ok"]]
    line = f"{len(statuses)} jobs: {len(statuses) - len(failed)} ok, {len(failed)} failed"
    if failed:
        varying = dict(
            zip((s["num"] for s in statuses), _varying([s["overrides"] for s in statuses]))
        )
        parts = []
        for s in failed:
            shown = " ".join(o for o in s["overrides"] if o in varying[s["num"]])
            reason = (s["error"] or "").strip().splitlines()[0] if s["error"] else "failed"
            if len(reason) > 120:
                reason = reason[:117] + "..."
            parts.append(f"#{s['num']} {shown}: {reason}")
        line += " (" + "; ".join(parts) + ")"
    return line


_SWEEP_RESULT: dict[str, Any] = {}


class SweepSummary(Callback):
    """Hydra callback (launcher side): after a sweep, read the jobs' statuses and summarise.

    Jobs may run in other processes (submitit), so they report through files in their output
    directories, which share the sweep directory.
    """

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_id = os.environ.get(_SWEEP_ID_ENV, "")
        statuses = []
        for path in sweep_dir.rglob(JOB_STATUS_FILE):
            try:
                status = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if status.get("sweep") == sweep_id:
                statuses.append(status)
        _SWEEP_RESULT["statuses"] = statuses


def start_sweep() -> dict[str, Any]:
    """Before ``hydra.main``: a fresh sweep id (inherited by the jobs' processes), no statuses
    read yet, and the Hydra callback that reads them (for ``hydra.callbacks``)."""
    _SWEEP_RESULT.clear()
    os.environ[_SWEEP_ID_ENV] = secrets.token_hex(8)
    return {"lazydet_sweep_summary": {"_target_": f"{__name__}.SweepSummary"}}


def finished_statuses() -> list[dict[str, Any]] | None:
    """After ``hydra.main``: the statuses :class:`SweepSummary` read (None: no sweep ended)."""
    return _SWEEP_RESULT.get("statuses")


def write_job_status(
    output_dir: Path, *, num: int, overrides: list[str], error: str | None, log: Path | None
) -> None:
    """Record a sweep job's outcome in ``output_dir/lazydet_job.json`` (``error`` None: ok;
    ``log``: where its traceback is, Hydra's job log, when one was logged)."""
    status = {
        "sweep": os.environ.get(_SWEEP_ID_ENV, ""),
        "num": num,
        "overrides": list(overrides),
        "ok": error is None,
        "error": error,
        "log": str(log) if log is not None else None,
    }
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / JOB_STATUS_FILE).write_text(json.dumps(status))
    except OSError as e:
        logger.error("Cannot record the job's status in %s: %s", output_dir, e)
