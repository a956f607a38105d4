"""lazydet's one command layer: what ``lazydet.train``, ``lazydet.evaluate`` and ``lazydet.predict``
share between the command line and a composed config.

The pipeline, from a command line to a config (``vet_command_line`` then ``compose``):

0. **habits** (``refuse_detectron2_habits``, in every command): Detectron2's flags and yacs keys
   (``--config-file X``, ``--num-gpus N``, ``--resume``, ``--eval-only``, ``MODEL.WEIGHTS X``)
   get one line each naming the lazydet way, exit 2.
1. **split** (``config.overrides.split_overrides``): the words become the experiment
   (``conf=NAME`` or ``conf=path/to/exp.py``, see ``file_experiments``), group choices
   (``model/backbone=vit_b``, also written ``model.backbone=vit_b``), value overrides
   (``optimizer.lr=0.02``, ``+key=...``, ``~key``) and Hydra's own (``hydra.run.dir=...``).
2. **group overrides** (``config.hydra_bridge.group_overrides_for``): ``++group=option`` and the
   dotted form become what Hydra's defaults list understands; sweeps over groups are expanded
   (``group_dimensions``). Before any config file runs, ``config.static.precheck_value_overrides``
   reports a key that no literal option sets (running files imports torch: seconds).
3. **Hydra defaults** (``config.hydra_bridge.compose``): Hydra's config loader picks the files of
   the defaults list and the group choices (``config.hydra_private``: the only door to Hydra's
   private API).
4. **build**: the chosen files are executed (``config.files.load``) into one ``Config`` tree.
5. **checked value overrides** (``config.overrides.apply_value_override``): each ``KEY=VALUE``
   is checked against the signature of the class it configures (a key of a plain mapping, such
   as ``schedule.max_iter``, against the kind of value the config wrote), then applied (every
   value of a sweep is checked).
6. **validate** (``config.validate``): the whole config, every problem at once.

``vet_command_line`` runs 1-6 for each job of a sweep (up to ``MAX_VETTED_JOBS``) before Hydra
is called, so a typo costs one second and one message. The commands then compose again through
the same ``compose`` (in Hydra's task function for ``train``, ``compose_from_command_line`` for
``evaluate`` / ``predict``): the CLI and notebooks get identical configs.

Exit codes, one contract for every command (``command_main``, and ``lazydet.train`` alike):
``--help`` prints the command's doc; known errors print one line ``prog: message`` on stderr, no
traceback, and exit 2 when the command line or config is wrong (``UsageError``, ``ConfigError``:
nothing is written) or 1 when an input is (a file, a checkpoint, a value:
``InstantiationError``, ``OSError``, ``ValueError``). Anything else is a bug and keeps its
traceback. A training run stopped by a signal exits 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigError, InstantiationError
from .hydra_bridge import compose, group_overrides_for, register_with_hydra
from .overrides import override_choices, parse_overrides, split_overrides
from .tree import CONFIG_PATH_ENV, EXPERIMENT_GROUP, ConfigTree

__all__ = [
    "MAX_VETTED_JOBS",
    "UsageError",
    "check_output_dir",
    "command_main",
    "compose_from_command_line",
    "detectron2_habits",
    "file_experiments",
    "help_text",
    "own_flag",
    "own_number",
    "print_job_configs",
    "refuse_detectron2_habits",
    "split_own_options",
    "vet_command_line",
]

MAX_VETTED_JOBS = 64  # sweeps larger than this are vetted on their first combination only


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


def expand(values: list[list[str]]) -> list[list[str]]:
    return [list(combo) for combo in itertools.product(*values)] if values else [[]]


def group_dimensions(groups: list[str], tree: ConfigTree) -> list[list[str]]:
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
    from .static import precheck_value_overrides

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
    groups = group_overrides_for(tree, names[0], split.groups)
    # Compose each combination of experiment and group choices (value sweeps are checked value
    # by value inside compose).
    combos = [(n, g) for n in names for g in expand(group_dimensions(groups, tree))]
    value_texts = [o.input_line for o in split.values]
    for name, chosen in combos[:MAX_VETTED_JOBS]:
        compose(name, [*chosen, *value_texts, *split.hydra], allow_sweeps=True)
    return [*split.experiment, *groups, *value_texts, *split.hydra]


def check_output_dir(text: str) -> None:
    """Refuse ``hydra.run.dir`` / ``hydra.sweep.dir`` values that cannot be used, up front.

    An empty or blank value (an unset shell variable: ``hydra.run.dir=$RUN``) is refused: Hydra
    would run in the current directory and write the run's files there. A run directory that
    a live training process holds (its ``.lock``, tried without writing anything:
    ``lazydet.engine.checkpointer.check_run_directory_free``) is refused before Hydra writes its
    logs there. Otherwise checked by making the fixed part of the path (before any
    ``${now:...}``) and removing what was made, so that a bad value costs one message and leaves
    nothing behind.
    """
    import tempfile

    key, _, value = text.partition("=")
    key = key.lstrip("+")
    if key not in ("hydra.run.dir", "hydra.sweep.dir"):
        return
    if not value.strip():
        raise ConfigError(
            f"'{text}': the run directory is empty (an unset shell variable?); the run would "
            f"write its files into the current directory. Give a directory, e.g. {key}=runs/exp1, "
            "or leave it out (outputs/DATE/TIME)."
        )
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


def print_job_configs(overrides: list[str], what: str) -> None:
    """``-m ... --cfg job``: each job's composed config, as YAML, with its overrides."""
    from .serialize import to_yaml

    if what != "job":
        raise ConfigError(
            f"--cfg {what} with -m: Hydra's config differs per job; use --cfg job to see each "
            f"job's config, or drop -m to see --cfg {what} for one run."
        )
    tree = register_with_hydra()
    split = split_overrides(overrides, tree)
    (experiment,) = parse_overrides(split.experiment)
    dimensions = [[f"{EXPERIMENT_GROUP}={n}" for n in override_choices(experiment)]]
    dimensions += group_dimensions(split.groups, tree)
    dimensions += [
        [f"{o.input_line.split('=', 1)[0]}={c}" for c in override_choices(o)] for o in split.values
    ]
    for num, job in enumerate(expand(dimensions)):
        name = job[0].split("=", 1)[1]
        cfg = compose(name, [*job[1:], *split.hydra])
        print(f"# job #{num}: {' '.join(job)}")
        print(to_yaml(cfg))


def file_experiments(overrides: list[str]) -> list[str]:
    """``conf=path/to/exp.py``: put the file on the config path and choose it by its name.

    The file joins ``LAZYDET_CONFIG_PATH`` (first, so it wins over an experiment of the same name)
    so that sweep jobs started in other processes find it too.
    """
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


def compose_from_command_line(overrides: list[str]) -> Any:
    """Compose the experiment the way ``lazydet.train`` does (same vetting, same errors)."""
    vetted = vet_command_line(overrides, multirun=False)
    name = next(o.split("=", 1)[1] for o in vetted if o.split("=", 1)[0] == "conf")
    return compose(name, [o for o in vetted if o.split("=", 1)[0] != "conf"])


class UsageError(ValueError):
    """A command line that cannot run as written (a missing or malformed argument): exit 2."""


# Detectron2's yacs keys (``MODEL.WEIGHTS path``) that have one lazydet key; others get the
# general advice. ``{value}`` is the value the user gave after the key.
_YACS_KEYS = {
    "MODEL.WEIGHTS": "train.init_checkpoint={value}",
    "MODEL.DEVICE": "train.device={value}",
    "SOLVER.BASE_LR": "optimizer.lr={value}",
    "SOLVER.MAX_ITER": "schedule.max_iter={value}",
    "SOLVER.IMS_PER_BATCH": "dataloader.train.total_batch_size={value}",
    "SOLVER.CHECKPOINT_PERIOD": "train.checkpoint_period={value}",
    "SOLVER.AMP.ENABLED": "train.amp=fp16 (or bf16)",
    "TEST.EVAL_PERIOD": "train.eval_period={value}",
    "SEED": "train.seed={value}",
}


def _is_yacs_key(word: str) -> bool:
    """``MODEL.WEIGHTS``, ``SOLVER.BASE_LR``, ``OUTPUT_DIR``: Detectron2's upper-case keys."""
    import re

    return bool(re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*", word)) and (
        "." in word or word in ("OUTPUT_DIR", "SEED")
    )


def detectron2_habits(argv: list[str], prog: str) -> list[str]:
    """One line per Detectron2 habit in ``argv`` (``--eval-only``, ``--resume``,
    ``--config-file X``, ``--num-gpus N``, ``MODEL.WEIGHTS X``...), naming the lazydet way.

    Empty when there is none. ``prog`` (``lazydet.train``, ``lazydet.evaluate``,
    ``lazydet.predict``) picks the advice that fits the command.
    """
    lines: list[str] = []
    training = prog == "lazydet.train"
    experiment = next((w for w in argv if w.startswith("conf=")), "conf=EXPERIMENT")
    words = list(argv)
    for i, word in enumerate(words):
        flag, has_value, inline = word.partition("=")
        following = words[i + 1] if i + 1 < len(words) else ""
        value = inline if has_value else following
        if not value or value.startswith("-") or "=" in value:
            value = "VALUE"
        if flag == "--eval-only":
            lines.append(
                "--eval-only is Detectron2's; lazydet evaluates a checkpoint with its own command: "
                f"python -m lazydet.evaluate {experiment} train.init_checkpoint=PATH"
                if prog != "lazydet.evaluate"
                else "--eval-only is Detectron2's; lazydet.evaluate only evaluates: drop it."
            )
        elif flag == "--resume":
            lines.append(
                "--resume is Detectron2's; lazydet resumes on its own: run the same command with "
                "the same hydra.run.dir and it continues from the newest checkpoint there "
                "(train.resume=false starts over)."
            )
        elif flag == "--config-file":
            if value.endswith((".yaml", ".yml")):
                lines.append(
                    "--config-file is Detectron2's; lazydet's configs are Python: conf=NAME (an "
                    "experiment; --help lists them) or conf=path/to/exp.py."
                )
            else:
                name = value if value != "VALUE" else "EXPERIMENT"
                lines.append(f"--config-file is Detectron2's; lazydet writes conf={name}.")
        elif flag == "--num-gpus":
            lines.append(
                f"--num-gpus is Detectron2's; lazydet writes train.num_processes={value} (the "
                "default trains on every visible GPU; torchrun and srun work too)."
                if training
                else "--num-gpus is Detectron2's; run this command under torchrun "
                "(torchrun --nproc-per-node=N -m " + prog + " ...) to use several GPUs."
            )
        elif flag in ("--num-machines", "--machine-rank", "--dist-url"):
            lines.append(
                f"{flag} is Detectron2's; lazydet joins torchrun's or srun's process group: "
                "start it with torchrun or srun (README, 'Several GPUs')."
            )
        elif flag == "--opts":
            lines.append("--opts is Detectron2's; give overrides as KEY=VALUE words directly.")
        elif _is_yacs_key(flag):
            if flag == "OUTPUT_DIR":
                lazydet_way = f"hydra.run.dir={value}" if training else f"output={value}"
            elif flag in _YACS_KEYS:
                lazydet_way = _YACS_KEYS[flag].format(value=value)
            else:
                lazydet_way = "KEY=VALUE on the config's own keys (--cfg job prints them)"
            lines.append(f"'{flag}' is a Detectron2 (yacs) key; lazydet writes {lazydet_way}.")
    return lines


def refuse_detectron2_habits(argv: list[str], prog: str) -> None:
    """Raise UsageError with ``detectron2_habits``'s lines, one per habit, if there are any."""
    lines = detectron2_habits(argv, prog)
    if lines:
        raise UsageError(f"\n{prog}: ".join(lines))


def command_main(
    prog: str, doc: str | None, run: Callable[[list[str]], Any], argv: list[str] | None = None
) -> None:
    """Run ``run(argv)`` as the command ``prog`` and exit with its code (an int; else 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(doc)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        refuse_detectron2_habits(argv, prog)
        code = run(argv)
    except (UsageError, ConfigError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (InstantiationError, OSError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def split_own_options(
    argv: list[str],
    own_keys: Collection[str],
    *,
    unknown: Callable[[str], str],
    is_override: Callable[[str], bool] = lambda arg: not arg.startswith("-"),
) -> tuple[dict[str, str], list[str]]:
    """A command's own ``key=value`` options apart from its config overrides.

    Args:
        argv: the command's words, in order.
        own_keys: the keys the command itself takes (``output``, ``device``...).
        unknown: the message for a word that is neither an own option nor an override.
        is_override: whether a word that is not an own option is a config override (by
            default any word that is not a flag: Hydra tells a bad override by name later).

    Returns:
        ``(own options by key, config overrides in order)``.

    Raises:
        UsageError: an own key given twice, or a word ``is_override`` refuses.
    """
    own: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in own_keys:
            if key in own:
                raise UsageError(f"{key}= is given twice.")
            own[key] = value
        elif is_override(arg):
            overrides.append(arg)
        else:
            raise UsageError(unknown(arg))
    return own, overrides


_KIND_NAMES = {int: "an integer", float: "a number"}


def own_number(
    own: dict[str, str],
    key: str,
    kind: type[int] | type[float],
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
) -> Any:
    """``own[key]`` as ``kind`` (``default`` when absent), finite and within ``[low, high]``.

    Raises:
        UsageError: naming ``key=value`` and what to give instead.
    """
    if key not in own:
        return default
    name = _KIND_NAMES[kind]
    try:
        value = kind(own[key])
    except ValueError:
        raise UsageError(f"{key}={own[key]!r} is not {name}.") from None
    if (
        (isinstance(value, float) and not math.isfinite(value))
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        bounds = (
            f"between {low:g} and {high:g}"
            if low is not None and high is not None
            else (f"at least {low:g}" if low is not None else "finite")
        )
        raise UsageError(f"{key}={own[key]!r}: give {name} {bounds}.")
    return value


_TRUE_WORDS, _FALSE_WORDS = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


def own_flag(own: dict[str, str], key: str, default: bool) -> bool:
    """``own[key]`` as a boolean (``true``/``false``, ``1``/``0``, ``on``/``off``, ``yes``/``no``)."""
    value = own.get(key)
    if value is None:
        return default
    if value.lower() in _TRUE_WORDS:
        return True
    if value.lower() in _FALSE_WORDS:
        return False
    raise UsageError(f"{key}={value!r} is not true or false.")


def fail(prog: str, error: BaseException, code: int) -> NoReturn:
    """End the command with ``prog: message`` on stderr and exit status ``code``."""
    print(f"{prog}: {error}", file=sys.stderr)
    raise SystemExit(code) from None


class TrainCommand:
    """A ``lazydet.train`` command line, vetted: what to hand to ``hydra.main``.

    Attributes:
        argv: Hydra's flags, then the vetted overrides (``vet_command_line``'s form).
        multirun: ``-m`` was given.
        experiment: the first experiment's name (Hydra's default for ``conf``), None for
            Hydra-only flags (``--hydra-help``, ``--info``, ``--shell-completion``).
    """

    def __init__(self, *, argv: list[str], multirun: bool, experiment: str | None) -> None:
        self.argv = argv
        self.multirun = multirun
        self.experiment = experiment


def vet_train_command_line(argv: list[str]) -> TrainCommand | None:
    """Steps 1-6 for ``lazydet.train``: ``--help``, Hydra's flags, ``conf=file.py``, the run
    directory, every job of a sweep. Returns None when the command is already done (``--help``,
    ``-m ... --cfg job``); exits 2 with one message on a bad command line."""
    from .hydra_private import args_parser

    prog = "lazydet.train"
    if "--help" in argv or "-h" in argv:
        try:
            print(help_text(register_with_hydra()))
        except ConfigError as e:
            fail(prog, e, 2)
        return None
    try:
        refuse_detectron2_habits(argv, prog)
    except UsageError as e:
        fail(prog, e, 2)
    args = args_parser().parse_args(argv)  # a bad flag: argparse's message, exit 2
    try:
        given = file_experiments(list(args.overrides))  # conf=file.py: on the config path
        tree = register_with_hydra()
        if args.hydra_help or args.info or args.shell_completion:
            return TrainCommand(argv=argv, multirun=args.multirun, experiment=None)
        for text in given:
            check_output_dir(text)
        overrides = vet_command_line(given, multirun=args.multirun)
        if args.multirun and args.cfg:
            print_job_configs(overrides, args.cfg)
            return None
        split = split_overrides(overrides, tree)
        experiment = override_choices(parse_overrides(split.experiment)[0])[0]
    except ConfigError as e:
        fail(prog, e, 2)
    flags = [a for a in argv if a not in args.overrides]
    return TrainCommand(argv=flags + overrides, multirun=args.multirun, experiment=experiment)
