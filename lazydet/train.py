"""``python -m lazydet.train conf=EXPERIMENT [overrides...]``: the main job.

Hydra composes the experiment from the config directories (see ``--help``), runs it locally or
sweeps it (``-m``) through any Hydra launcher (``hydra/launcher=submitit_local`` or
``submitit_slurm``). Before Hydra sees the command line, lazydet vets it
(``lazydet.config.command_line``): group choices (``model.backbone=vit_b`` means
``model/backbone=vit_b``), argument names and types against the targets' signatures, and the
whole composed config, so that a typo fails in a second with a message naming the key, not an
hour into training.

A run saves the config (``.hydra/`` plus a runnable ``config.py`` and ``config.yaml``) and trains
it in the run directory (``lazydet.engine.run.run``; see docs/training.md): checkpoints,
``metrics.jsonl`` and TensorBoard events land there, and the same command with the same directory
resumes. Nothing is written into a directory before the run holds its lock and the resume is
checked: the command line refuses a directory a live run holds before Hydra starts, and Hydra is
told not to write ``.hydra/`` itself (``hydra.output_subdir=null``); ``train_job`` hands those
files to the run, which writes them with ``config.py`` once the directory is its own.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lazydet.config import ConfigError, InstantiationError, compose
from lazydet.config.command_line import fail, vet_train_command_line
from lazydet.config.hydra_bridge import PRIMARY_CONFIG, register_with_hydra, set_launch_options
from lazydet.config.tree import EXPERIMENT_GROUP
from lazydet.engine import sweep
from lazydet.engine.run_directory import (
    defer_hydra_files,
    draw_run_curves,
    draw_validation_predictions,
    hydra_files,
    refuse_busy_run_directory,
    refuse_unusable_device,
)

if TYPE_CHECKING:
    from lazydet.engine.run import TrainResult

__all__ = ["main", "run", "train_job"]

logger = logging.getLogger("lazydet.train")


def run(
    cfg: Any,
    output_dir: Path,
    *,
    extra_files: dict[str, str] | None = None,
    config_name: str | None = None,
) -> dict[str, str]:
    """Train ``cfg`` in ``output_dir`` (``lazydet.engine.run.run``) as the command does: print
    the result, and turn its endings into the command's exit statuses.

    Problems a user can fix (a non-finite loss, an unwritable run directory, a model and dataset
    that disagree) end the process with one message and exit status 1; a config that does not
    fit the run directory (a resume into another config's run, a ``schedule.max_iter`` below its
    checkpoint, an unknown ``train.device``) exits 2 with nothing written; a finished run started
    again says so and how to train longer, writes nothing and exits 0; a stop signal (Ctrl-C,
    SIGTERM, SIGUSR2) saved a checkpoint and exits with status 128 + the signal number (in a
    submitit SLURM job the job is requeued first, ``lazydet.engine.slurm``). Returns the report
    (``{key: text}``) that Hydra keeps as the job's return value.
    """
    # Imported here: a bad command line is reported before torch is imported (a second).
    from lazydet.engine.run import RunFinished, RunRefused, TrainResult
    from lazydet.engine.run import run as run_training
    from lazydet.engine.trainer import NonFiniteLossError

    try:
        result = run_training(
            cfg, Path(output_dir), extra_files=extra_files, config_name=config_name
        )
    except RunFinished as e:
        print(f"lazydet.train: {e}")
        raise SystemExit(0) from None
    except RunRefused as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail("lazydet.train", e, 2)  # the config does not fit this directory: nothing written
    except InstantiationError as e:
        dataset = (cfg.get("dataset") or {}).get("train")
        if "LAZYDET_DATASETS" in str(e) and not str(dataset).startswith("shapes"):
            raise InstantiationError(
                f"{e} To try this experiment now without these files, add dataset=shapes "
                "(the bundled synthetic set, made on first use).",
                path=e.path,
            ) from e
        raise
    except (NonFiniteLossError, OSError, ValueError) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        # The message names the iteration, key or path and what to do; a traceback through
        # the trainer would only bury it.
        fail("lazydet.train", e, 1)
    if not isinstance(result, TrainResult):
        return result  # a model-only config: built and described
    if result.stop_signal:
        _exit_after_stop(result)
    picture = draw_validation_predictions(cfg, result.final_weights, Path(output_dir))
    curves = draw_run_curves(Path(output_dir))
    scores = "".join(f"\n  {k}: {v:.4f}" for k, v in result.eval_results.items())
    print(
        f"Training finished ({result.max_iter} iterations).{scores}\n"
        f"  run directory: {result.output_dir}\n"
        f"  TensorBoard:   tensorboard --logdir {result.tensorboard}\n"
        f"  metrics:       {result.metrics}\n"
        f"  final weights: {result.final_weights}"
        + (f"\n  predictions:   {picture}" if picture else "")
        + (f"\n  curves:        {curves}" if curves else "")
    )
    return {
        "iteration": f"{result.iteration}/{result.max_iter}",
        "run_dir": str(result.output_dir),
        "tensorboard": str(result.tensorboard),
        "final_weights": str(result.final_weights or ""),
        **{k: f"{v:.4g}" for k, v in result.eval_results.items()},
    }


def _exit_after_stop(result: TrainResult) -> None:
    from lazydet.engine.slurm import after_stop_signal

    # A submitit SLURM job requeues here (preemption, time limit) or reports its cancellation.
    after_stop_signal(
        stop_signal=result.stop_signal,
        preempted_elsewhere=result.stopped_by_other_rank,
        iteration=result.iteration,
        max_iter=result.max_iter,
        checkpoint=result.last_checkpoint,
    )
    print(
        f"lazydet.train: stopped by {result.stop_signal} after iteration "
        f"{result.iteration} of {result.max_iter}; checkpoint {result.last_checkpoint}. "
        "Run the same command (same hydra.run.dir) to resume.",
        file=sys.stderr,
    )
    number = getattr(signal.Signals, str(result.stop_signal), signal.SIGTERM)
    raise SystemExit(128 + int(number))


def train_job(hydra_cfg: Any) -> dict[str, str]:
    """Hydra's task function: one job of a run or a sweep.

    In a sweep, a job that fails (any exception, or ``SystemExit`` from ``run``) is reported with
    its number and overrides and recorded in ``lazydet_job.json`` (``lazydet.engine.sweep``); the
    sweep goes on with the next job, and the command exits 1 at the end with a one-line summary.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    name = hydra.runtime.choices[EXPERIMENT_GROUP]
    overrides = [o for o in hydra.overrides.task if o.split("=", 1)[0] != EXPERIMENT_GROUP]
    output_dir = Path(hydra.runtime.output_dir)
    sweeping = hydra.mode == RunMode.MULTIRUN
    traceback_logged = False
    try:
        # Compose again through lazydet rather than converting Hydra's result: one code path for
        # the CLI and for notebooks, with lazydet's override semantics and validation.
        result, error = (
            run(
                compose(name, overrides),
                output_dir,
                extra_files=hydra_files(hydra_cfg) if hydra.output_subdir is None else None,
                config_name=" ".join([f"{EXPERIMENT_GROUP}={name}", *overrides]),
            ),
            None,
        )
    except (Exception, SystemExit) as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            result, error = {}, None
        elif not sweeping:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(
                e, (ConfigError, InstantiationError)
            ):
                raise
            # The message names the config key and the cause; a traceback through the builder
            # would only bury it. HYDRA_FULL_ERROR=1 shows the whole chain.
            fail("lazydet.train", e, 1)
        else:
            result, error = {}, sweep.failure_text(e)
            if not isinstance(e, (ConfigError, InstantiationError, SystemExit)):
                logger.error("Job #%s failed", hydra.job.num, exc_info=e)  # into the job's log
                traceback_logged = True
            print(
                f"lazydet.train: job #{hydra.job.num} ({' '.join(hydra.overrides.task)}) "
                f"failed: {error}",
                file=sys.stderr,
            )
    if sweeping:
        # Where the traceback is: Hydra's job log (the console shows only the summary, and on
        # SLURM the job's own stderr sits in a submitit file). lazydet's own errors carry their
        # whole story in the message and log none.
        sweep.write_job_status(
            output_dir,
            num=hydra.job.num,
            overrides=list(hydra.overrides.task),
            error=error,
            log=sweep.job_log(output_dir, hydra.job.name) if traceback_logged else None,
        )
    return result


def main(argv: list[str] | None = None) -> None:
    import hydra

    argv = list(sys.argv[1:] if argv is None else argv)
    refuse_busy_run_directory(argv)
    command = vet_train_command_line(argv)
    if command is None:
        return
    refuse_unusable_device(command.argv)
    callbacks = sweep.start_sweep() if command.multirun else {}
    set_launch_options(callbacks=callbacks, experiment=command.experiment)
    register_with_hydra()
    argv_for_hydra = command.argv if command.experiment is None else defer_hydra_files(command.argv)
    sys.argv = [sys.argv[0] if sys.argv else "lazydet.train", *argv_for_hydra]
    hydra.main(version_base="1.3", config_path=None, config_name=PRIMARY_CONFIG)(train_job)()
    statuses = sweep.finished_statuses()
    if command.multirun and statuses is not None:
        failed = any(not s["ok"] for s in statuses)
        for s in sorted(statuses, key=lambda s: s["num"]):
            if not s["ok"] and s.get("log"):
                print(f"lazydet.train: job #{s['num']}'s log: {s['log']}", file=sys.stderr)
        print(
            f"lazydet.train: {sweep.sweep_summary(statuses)}",
            file=sys.stderr if failed else sys.stdout,
        )
        if failed:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
