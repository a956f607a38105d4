"""``python -m lazydet.train conf=EXPERIMENT [overrides...]``: the main job.

Hydra composes the experiment from the config directories (see ``--help``), runs it locally or
sweeps it (``-m``) through any Hydra launcher (``hydra/launcher=submitit_local`` or
``submitit_slurm``). Before Hydra sees the command line, lazydet vets it: group choices
(``model.backbone=vit_b`` means ``model/backbone=vit_b``), argument names and types against the
targets' signatures, and the whole composed config, so that a typo fails in a second with a
message naming the key, not an hour into training.

A run saves the config (``.hydra/`` plus a runnable ``config.py`` and ``config.yaml``) and trains
it in the run directory (``run``; see docs/training.md): checkpoints, ``metrics.jsonl`` and
TensorBoard events land there, and the same command with the same directory resumes.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from lazydet.config import ConfigError, InstantiationError, instantiate, save
from lazydet.config.hydra_bridge import PRIMARY_CONFIG, compose, register_with_hydra
from lazydet.config.overrides import override_choices, parse_overrides, split_overrides
from lazydet.config.tree import EXPERIMENT_GROUP, ConfigTree

logger = logging.getLogger("lazydet.train")

_MAX_VETTED_JOBS = 64  # sweeps larger than this are vetted on their first combination only


def help_text(tree: ConfigTree) -> str:
    lines = [
        "lazydet.train: compose an experiment from Python configs and run it.",
        "",
        "Usage:",
        "  python -m lazydet.train conf=EXPERIMENT [GROUP=OPTION ...] [KEY=VALUE ...] [+KEY=VALUE]",
        "  python -m lazydet.train -m conf=EXPERIMENT optimizer.lr=0.01,0.02      (one job per value)",
        "  python -m lazydet.train -m hydra/launcher=submitit_local conf=EXPERIMENT ...",
        "  python -m lazydet.train conf=EXPERIMENT --cfg job [--resolve]          (print the config)",
        "  python -m lazydet.train -m conf=A,B ... --cfg job                   (each job's config)",
        "  python -m lazydet.train conf=path/to/exp.py [KEY=VALUE ...]   (a file, e.g. a saved run)",
        "",
        "Experiments (conf=...):",
    ]
    experiments = tree.experiments()
    width = max((len(n) for n in experiments), default=0)
    for name in experiments:
        lines.append(f"  {name:<{width}}  {tree.describe(tree.experiment_file(name))}".rstrip())
    if not experiments:
        lines.append("  (none found)")
    lines += ["", "Groups (GROUP=OPTION; the dotted form model.backbone=OPTION works too):"]
    for group, options in tree.groups().items():
        lines.append(f"  {group}: {', '.join(options)}")
    lines += [
        "",
        "Overrides: KEY=VALUE changes a value, +KEY=VALUE adds an argument the config does not",
        "set, ++KEY=VALUE adds or changes, ~KEY removes one, KEY.0=VALUE changes a list item,",
        "GROUP=null removes a group's subtree. Names and types are checked against the classes",
        "they configure. Sweeps (-m): a,b,c  range(1,4)  GROUP=glob(res*). A failing job does",
        "not stop a sweep; the command exits 1 at the end with a summary. Exit status 2: a bad",
        "command line (nothing is written).",
        "",
        "Config directories (first wins; add yours with LAZYDET_CONFIG_PATH=dir1:dir2):",
        *[f"  {root}" for root in tree.roots],
        "",
        "Hydra's own flags (--cfg, --info, -m, hydra/launcher=..., hydra.run.dir=...): --hydra-help",
    ]
    return "\n".join(lines)


def _expand(values: list[list[str]]) -> list[list[str]]:
    return [list(combo) for combo in itertools.product(*values)] if values else [[]]


def _group_dimensions(groups: list[str], tree: ConfigTree) -> list[list[str]]:
    """Each group override as the list of plain overrides it sweeps over (one if no sweep)."""
    options = tree.groups()
    out = []
    for text, override in zip(groups, parse_overrides(groups)):
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            out.append(
                [
                    f"{key}={c}"
                    for c in override_choices(override, options.get(override.key_or_group))
                ]
            )
        else:
            out.append([text])
    return out


def vet_command_line(overrides: list[str], *, multirun: bool) -> list[str]:
    """Check the overrides of one command line; return them in the form Hydra should get.

    Raises ConfigError with lazydet's message for the first problem found.
    """
    from lazydet.config.hydra_bridge import _group_overrides_for
    from lazydet.config.static import precheck_value_overrides

    tree = register_with_hydra()
    split = split_overrides(overrides, tree)
    if not split.experiment:
        experiments = ", ".join(tree.experiments()) or "(none found)"
        raise ConfigError(
            f"Choose an experiment with conf=NAME. Experiments: {experiments}. "
            "See python -m lazydet.train --help."
        )
    if len(split.experiment) > 1:
        raise ConfigError(f"conf= is given twice: {split.experiment}.")
    (experiment_override,) = parse_overrides(split.experiment)
    names = override_choices(experiment_override)
    parsed = parse_overrides(split.groups) + split.values
    sweeping = experiment_override.is_sweep_override() or any(o.is_sweep_override() for o in parsed)
    if sweeping and not multirun:
        raise ConfigError(
            "The overrides hold a sweep (a=1,2); add -m (--multirun) to launch one job per value."
        )
    chooses_sweeper = any(h.split("=", 1)[0].lstrip("+") == "hydra/sweeper" for h in split.hydra)
    for o in parsed:
        if getattr(o.value_type, "name", "") == "INTERVAL_SWEEP" and not chooses_sweeper:
            override_choices(o)  # raises the message on interval(...)
    # A key that a literal group option does not set is reported before any config file runs
    # (running them imports torch: seconds).
    precheck_value_overrides(tree, names, split.groups, split.values)
    # ++group=option (add or choose) becomes what Hydra understands for the first experiment.
    groups = _group_overrides_for(tree, names[0], split.groups)
    # Compose each combination of experiment and group choices (value sweeps are checked value
    # by value inside compose).
    combos = [(n, g) for n in names for g in _expand(_group_dimensions(groups, tree))]
    value_texts = [o.input_line for o in split.values]
    for name, chosen in combos[:_MAX_VETTED_JOBS]:
        compose(name, [*chosen, *value_texts, *split.hydra], allow_sweeps=True)
    return [*split.experiment, *groups, *value_texts, *split.hydra]


def _describe(obj: Any) -> str:
    try:
        import torch

        if isinstance(obj, torch.nn.Module):
            n = sum(p.numel() for p in obj.parameters())
            return f"{type(obj).__name__} ({n:,} parameters)"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return (
            f"[{', '.join(_describe(v) for v in obj)}]"
            if len(obj) <= 4
            else f"{type(obj).__name__} of {len(obj)}"
        )
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return repr(obj)
    return type(obj).__name__


def build(cfg: Any) -> dict[str, Any]:
    """Instantiate the config; load ``train.init_checkpoint`` into ``model`` when it is set.

    Returns the built top-level objects, plus ``"init_checkpoint"``: the ``LoadReport`` (or None).
    """
    from lazydet.checkpoint.start import configure_start, load_start_weights

    configure_start(cfg)  # from scratch: nothing frozen, norms train
    built = instantiate(cfg)
    checkpoint = (cfg.get("train") or {}).get("init_checkpoint")
    report = None
    if checkpoint:
        if "model" not in built:
            raise ConfigError(
                f"train.init_checkpoint={checkpoint!r} is set but the config has no 'model'."
            )
        try:
            report = load_start_weights(built["model"], cfg)
        except (OSError, ValueError) as e:
            raise ConfigError(f"train.init_checkpoint: {e}") from e
    return {**built, "init_checkpoint": report}


def run(cfg: Any, output_dir: Path) -> dict[str, str]:
    """Save the composed config, build it and train it in ``output_dir`` (docs/training.md).

    Training needs ``dataloader.train``, ``schedule`` (``max_iter``, ``lr_scheduler``),
    ``optimizer`` and a ``train = L(TrainConfig)(...)`` node; a config without ``dataloader`` and
    ``schedule`` (a model-only experiment) is built and reported, not trained. The same command
    with the same run directory resumes from its newest complete checkpoint. Problems a user can
    fix (a non-finite loss, an unwritable run directory, a model and dataset that disagree) end
    the process with one message and exit status 1; a stop signal (Ctrl-C, SIGTERM, SIGUSR2)
    saves a checkpoint and exits with status 128 + the signal number.
    """
    import signal as _signal

    from lazydet.engine.defaults import seed_everything, train_worker
    from lazydet.engine.launch import launch
    from lazydet.engine.train_config import TrainConfig
    from lazydet.engine.trainer import NonFiniteLossError
    from lazydet.utils import comm

    output_dir.mkdir(parents=True, exist_ok=True)
    if comm.is_main_process():
        save(cfg, output_dir / "config.py")
        save(cfg, output_dir / "config.yaml")
        logger.info("Config saved to %s", output_dir / "config.py")
    train_node = cfg.get("train") or {}
    if not ("dataloader" in cfg and "schedule" in cfg):
        seed_everything(int(train_node.get("seed", 0) or 0))
        built = build(cfg)
        checkpoint_report = built.pop("init_checkpoint")
        report = {key: _describe(value) for key, value in built.items()}
        for key, text in report.items():
            logger.info("%s: %s", key, text)
        if checkpoint_report is not None:
            report["init_checkpoint"] = str(checkpoint_report).splitlines()[0]
        logger.warning(
            "The config has no dataloader and schedule: built and saved, nothing to train."
        )
        return report
    if train_node.get("_target_") != f"{TrainConfig.__module__}.TrainConfig":
        raise ConfigError(
            "train: training needs a typed node, train = L(TrainConfig)(...) with "
            "`from lazydet.engine.train_config import TrainConfig` (see docs/training.md); "
            f"this config has {type(train_node).__name__} {dict(train_node)!r}."
        )
    try:
        # One process here, or one per GPU / train.num_processes (each runs train_worker).
        result = launch(
            train_worker,
            num_processes=train_node.get("num_processes"),
            args=(build, cfg, output_dir),
        )
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
        print(f"lazydet.train: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    report = {
        "iteration": f"{result.iteration}/{result.max_iter}",
        "run_dir": str(result.output_dir),
        "tensorboard": str(result.tensorboard),
        "final_weights": str(result.final_weights or ""),
        **{k: f"{v:.4g}" for k, v in result.eval_results.items()},
    }
    if result.stop_signal:
        from lazydet.engine.slurm import after_stop_signal

        # A submitit SLURM job requeues here (preemption, time limit) or reports its cancellation.
        after_stop_signal(
            stop_signal=result.stop_signal,
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
        number = getattr(_signal.Signals, result.stop_signal, _signal.SIGTERM)
        raise SystemExit(128 + int(number))
    picture = _draw_validation_predictions(cfg, result.final_weights, output_dir)
    scores = "".join(f"\n  {k}: {v:.4f}" for k, v in result.eval_results.items())
    print(
        f"Training finished ({result.max_iter} iterations).{scores}\n"
        f"  run directory: {result.output_dir}\n"
        f"  TensorBoard:   tensorboard --logdir {result.tensorboard}\n"
        f"  metrics:       {result.metrics}\n"
        f"  final weights: {result.final_weights}"
        + (f"\n  predictions:   {picture}" if picture else "")
    )
    return report


def _draw_validation_predictions(cfg: Any, weights: Any, output_dir: Path) -> Path | None:
    """``val_predictions.png`` in the run directory: the final model on the first images of
    ``dataset.test``, drawn by the predictor built from the final checkpoint alone. A picture is
    a courtesy: failing to draw it is logged, never fails the finished run."""
    test = (cfg.get("dataset") or {}).get("test")
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))  # torchrun / srun ranks
    if rank != "0" or not (weights and test and Path(weights).is_file()):
        return None
    try:
        from lazydet.data import DatasetCatalog
        from lazydet.evaluation.predictor import Predictor
        from lazydet.predict import save_prediction_grid

        records = DatasetCatalog.get(test)[:8]
        predictor = Predictor.from_checkpoint(weights, device="cpu")
        images = [Path(r["file_name"]) for r in records]
        return save_prediction_grid(predictor, images, output_dir / "val_predictions.png")
    except Exception as e:
        logger.warning("Could not draw the validation predictions: %s: %s", type(e).__name__, e)
        return None


JOB_STATUS_FILE = "lazydet_job.json"  # a sweep job's outcome, read back by SweepSummary
_SWEEP_ID_ENV = "LAZYDET_SWEEP_ID"  # tells this sweep's status files from an earlier sweep's


def _failure_text(error: BaseException) -> str:
    """One line for a failed sweep job: lazydet's own message, else the exception's type and
    message (a ``SystemExit`` from ``run`` already printed its message: give its status)."""
    if isinstance(error, SystemExit):
        return f"exited with status {error.code}"
    if isinstance(error, (ConfigError, InstantiationError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _task(hydra_cfg: Any) -> dict[str, str]:
    """Hydra's task function: one job of a run or a sweep.

    In a sweep, a job that fails (any exception, or ``SystemExit`` from ``run``) is reported with
    its number and overrides and recorded in ``lazydet_job.json``; the sweep goes on with the
    next job, and the command exits 1 at the end with a one-line summary (see ``SweepSummary``).
    """
    import json

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
        cfg = compose(name, overrides)
        result = run(cfg, output_dir)
        error = None
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
            print(f"lazydet.train: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        else:
            result, error = {}, _failure_text(e)
            if not isinstance(e, (ConfigError, InstantiationError, SystemExit)):
                logger.error("Job #%s failed", hydra.job.num, exc_info=e)  # into the job's log
                traceback_logged = True
            print(
                f"lazydet.train: job #{hydra.job.num} ({' '.join(hydra.overrides.task)}) "
                f"failed: {error}",
                file=sys.stderr,
            )
    if sweeping:
        status = {
            "sweep": os.environ.get(_SWEEP_ID_ENV, ""),
            "num": hydra.job.num,
            "overrides": list(hydra.overrides.task),
            "ok": error is None,
            "error": error,
            # Where the traceback is: Hydra's job log (the console shows only the summary, and on
            # SLURM the job's own stderr sits in a submitit file). lazydet's own errors carry
            # their whole story in the message and log none.
            "log": str(_job_log(output_dir, hydra.job.name)) if traceback_logged else None,
        }
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / JOB_STATUS_FILE).write_text(json.dumps(status))
        except OSError as e:
            logger.error("Cannot record the job's status in %s: %s", output_dir, e)
    return result


def _job_log(output_dir: Path, job_name: str) -> Path:
    """Hydra's log file of a job (``<output_dir>/<job name>.log``), else its output directory."""
    log = output_dir / f"{job_name}.log"
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
        import json

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


def _check_output_dir(text: str) -> None:
    """Refuse ``hydra.run.dir`` / ``hydra.sweep.dir`` values that cannot be created, up front.

    Checked by making the fixed part of the path (before any ``${now:...}``) and removing what
    was made, so that a bad value costs one message and leaves nothing behind.
    """
    import tempfile

    key, _, value = text.partition("=")
    if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir") or not value:
        return
    literal = value.split("${", 1)[0]
    path = Path(literal or ".").expanduser().absolute()
    if "${" in value and not literal.endswith("/"):
        path = path.parent  # 'runs/exp_${now:...}': the run directory goes into 'runs/'
    made: list[Path] = []
    try:
        missing = []
        probe = path
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        if not probe.is_dir():
            raise ConfigError(f"'{text}': {probe} is a file, not a directory.")
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        tempfile.TemporaryDirectory(dir=path).cleanup()
    except OSError as e:
        raise ConfigError(
            f"'{text}': cannot create the run directory {path}: {e.strerror or e}. "
            "Choose a directory you can write to."
        ) from None
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()


def _print_job_configs(overrides: list[str], what: str) -> None:
    """``-m ... --cfg job``: each job's composed config, as YAML, with its overrides."""
    from lazydet.config import to_yaml

    if what != "job":
        raise ConfigError(
            f"--cfg {what} with -m: Hydra's config differs per job; use --cfg job to see each "
            f"job's config, or drop -m to see --cfg {what} for one run."
        )
    tree = register_with_hydra()
    split = split_overrides(overrides, tree)
    (experiment,) = parse_overrides(split.experiment)
    dimensions = [[f"{EXPERIMENT_GROUP}={n}" for n in override_choices(experiment)]]
    dimensions += _group_dimensions(split.groups, tree)
    dimensions += [
        [f"{o.input_line.split('=', 1)[0]}={c}" for c in override_choices(o)] for o in split.values
    ]
    for num, job in enumerate(_expand(dimensions)):
        name = job[0].split("=", 1)[1]
        cfg = compose(name, [*job[1:], *split.hydra])
        print(f"# job #{num}: {' '.join(job)}")
        print(to_yaml(cfg))


def _file_experiments(overrides: list[str]) -> list[str]:
    """``conf=path/to/exp.py``: put the file on the config path and choose it by its name.

    The file joins ``LAZYDET_CONFIG_PATH`` (first, so it wins over an experiment of the same name)
    so that sweep jobs started in other processes find it too.
    """
    from lazydet.config.tree import CONFIG_PATH_ENV

    out = []
    for text in overrides:
        key, _, value = text.partition("=")
        if key != EXPERIMENT_GROUP or ".py" not in value:
            out.append(text)
            continue
        names, files = [], []
        for item in value.split(","):
            path = Path(item).expanduser()
            if item.endswith(".py"):
                if not path.is_file():
                    raise ConfigError(
                        f"'{text}': {item} is not a file. Give the path of a config file, or "
                        "the name of an experiment (see --help)."
                    )
                files.append(path.resolve())
                names.append(path.stem)
            else:
                names.append(item)
        if len(set(names)) != len(names):
            raise ConfigError(f"'{text}': two experiments of the sweep have the same name.")
        entries = [str(f) for f in files] + [os.environ.get(CONFIG_PATH_ENV, "")]
        os.environ[CONFIG_PATH_ENV] = os.pathsep.join(e for e in entries if e)
        out.append(f"{EXPERIMENT_GROUP}={','.join(names)}")
    return out


def main(argv: list[str] | None = None) -> None:
    import secrets

    import hydra
    from hydra._internal.utils import get_args_parser

    from lazydet.config.hydra_bridge import set_launch_options

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        try:
            print(help_text(register_with_hydra()))
        except ConfigError as e:
            print(f"lazydet.train: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    args = get_args_parser().parse_args(argv)  # a bad flag: argparse's message, exit 2
    hydra_only = args.hydra_help or args.info or args.shell_completion
    experiment = None
    try:
        given = _file_experiments(list(args.overrides))
        tree = register_with_hydra()
        if not hydra_only:
            for text in given:
                _check_output_dir(text)
            overrides = vet_command_line(given, multirun=args.multirun)
            if args.multirun and args.cfg:
                _print_job_configs(overrides, args.cfg)
                return
            flags = [a for a in argv if a not in args.overrides]
            argv = flags + overrides
            split = split_overrides(overrides, tree)
            experiment = override_choices(parse_overrides(split.experiment)[0])[0]
    except ConfigError as e:
        print(f"lazydet.train: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    import lazydet.train as this  # under `python -m`, Hydra's callback lives in this copy

    this._SWEEP_RESULT.clear()
    os.environ[_SWEEP_ID_ENV] = secrets.token_hex(8)
    callback = {"_target_": "lazydet.train.SweepSummary"}
    set_launch_options(
        callbacks={"lazydet_sweep_summary": callback} if args.multirun else {},
        experiment=experiment,
    )
    register_with_hydra(tree)
    sys.argv = [sys.argv[0] if sys.argv else "lazydet.train", *argv]
    hydra.main(version_base="1.3", config_path=None, config_name=PRIMARY_CONFIG)(_task)()
    statuses = this._SWEEP_RESULT.get("statuses")
    if args.multirun and statuses is not None:
        failed = any(not s["ok"] for s in statuses)
        for s in sorted(statuses, key=lambda s: s["num"]):
            if not s["ok"] and s.get("log"):
                print(f"lazydet.train: job #{s['num']}'s log: {s['log']}", file=sys.stderr)
        print(
            f"lazydet.train: {sweep_summary(statuses)}", file=sys.stderr if failed else sys.stdout
        )
        if failed:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
