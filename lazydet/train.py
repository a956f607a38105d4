"""``python -m lazydet.train conf=EXPERIMENT [overrides...]``: the main job.

Hydra composes the experiment from the config directories (see ``--help``), runs it locally or
sweeps it (``-m``) through any Hydra launcher (``hydra/launcher=submitit_local`` or
``submitit_slurm``). Before Hydra sees the command line, lazydet vets it: group choices
(``model.backbone=vit_b`` means ``model/backbone=vit_b``), argument names and types against the
targets' signatures, and the whole composed config, so that a typo fails in a second with a
message naming the key, not an hour into training.

Until the trainer lands, a run composes, validates, instantiates what the config declares, saves
the config (``.hydra/`` plus a runnable ``config.py`` and ``config.yaml``) and reports what it built.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path
from typing import Any

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
        "  python -m lazydet.train conf=EXPERIMENT --cfg job                      (print the config)",
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
        "set, ~KEY removes one. Names and types are checked against the classes they configure.",
        "",
        "Config directories (first wins; add yours with LAZYDET_CONFIG_PATH=dir1:dir2):",
        *[f"  {root}" for root in tree.roots],
        "",
        "Hydra's own flags (--cfg, --info, -m, hydra/launcher=..., hydra.run.dir=...): --hydra-help",
    ]
    return "\n".join(lines)


def _expand(values: list[list[str]]) -> list[list[str]]:
    return [list(combo) for combo in itertools.product(*values)] if values else [[]]


def vet_command_line(overrides: list[str], *, multirun: bool) -> list[str]:
    """Check the overrides of one command line; return them in the form Hydra should get.

    Raises ConfigError with lazydet's message for the first problem found.
    """
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
    sweeping = experiment_override.is_sweep_override() or any(
        o.is_sweep_override() for o in parse_overrides(split.groups) + split.values
    )
    if sweeping and not multirun:
        raise ConfigError(
            "The overrides hold a sweep (a=1,2); add -m (--multirun) to launch one job per value."
        )
    # Each group sweep value is an option checked by split_overrides; compose each combination
    # of experiment and group choices (value sweeps are checked value by value inside compose).
    group_overrides = [
        [f"{g.split('=', 1)[0]}={c}" for c in override_choices(o)]
        for g, o in zip(split.groups, parse_overrides(split.groups))
    ]
    combos = [(n, g) for n in names for g in _expand(group_overrides)]
    value_texts = [o.input_line for o in split.values]
    for name, groups in combos[:_MAX_VETTED_JOBS]:
        compose(name, [*groups, *value_texts, *split.hydra], allow_sweeps=True)
    return [*split.experiment, *split.groups, *(o.input_line for o in split.values), *split.hydra]


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
    built = instantiate(cfg)
    checkpoint = (cfg.get("train") or {}).get("init_checkpoint")
    report = None
    if checkpoint:
        from lazydet.modeling.weights import load_weights

        if "model" not in built:
            raise ConfigError(
                f"train.init_checkpoint={checkpoint!r} is set but the config has no 'model'."
            )
        try:
            report = load_weights(built["model"], checkpoint)
        except (OSError, ValueError) as e:
            raise ConfigError(f"train.init_checkpoint: {e}") from e
        logger.info("%s", report)
    return {**built, "init_checkpoint": report}


def run(cfg: Any, output_dir: Path) -> dict[str, str]:
    """Save the composed config, build every object it declares, and report them."""
    output_dir.mkdir(parents=True, exist_ok=True)
    save(cfg, output_dir / "config.py")
    save(cfg, output_dir / "config.yaml")
    built = build(cfg)
    checkpoint_report = built.pop("init_checkpoint")
    report = {key: _describe(value) for key, value in built.items()}
    for key, text in report.items():
        logger.info("%s: %s", key, text)
    if checkpoint_report is not None:
        report["init_checkpoint"] = str(checkpoint_report).splitlines()[0]
    logger.info("Config saved to %s", output_dir / "config.py")
    return report


def _task(hydra_cfg: Any) -> dict[str, str]:
    """Hydra's task function: one job of a run or a sweep."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    name = hydra.runtime.choices[EXPERIMENT_GROUP]
    overrides = [o for o in hydra.overrides.task if o.split("=", 1)[0] != EXPERIMENT_GROUP]
    # Compose again through lazydet rather than converting Hydra's result: one code path for the
    # CLI and for notebooks, with lazydet's override semantics and validation.
    cfg = compose(name, overrides)
    try:
        return run(cfg, Path(hydra.runtime.output_dir))
    except (ConfigError, InstantiationError) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        # The message names the config key and the cause; a traceback through the builder
        # would only bury it. HYDRA_FULL_ERROR=1 shows the whole chain.
        print(f"lazydet.train: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    import hydra
    from hydra._internal.utils import get_args_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    tree = register_with_hydra()
    if "--help" in argv or "-h" in argv:
        print(help_text(tree))
        return
    args = get_args_parser().parse_args(argv)
    hydra_only = args.hydra_help or args.info or args.shell_completion
    if not hydra_only:
        try:
            overrides = vet_command_line(list(args.overrides), multirun=args.multirun)
        except ConfigError as e:
            print(f"lazydet.train: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        flags = [a for a in argv if a not in args.overrides]
        argv = flags + overrides
    sys.argv = [sys.argv[0] if sys.argv else "lazydet.train", *argv]
    hydra.main(version_base="1.3", config_path=None, config_name=PRIMARY_CONFIG)(_task)()


if __name__ == "__main__":
    main()
