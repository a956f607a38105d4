"""What an untrusted config may build: an explicit list of classes and functions, never a prefix.

``load(path, trusted=False)`` reads a YAML config as data, then refuses it unless every
``_target_`` (and every class or function stored as a value) is named in :data:`SAFE_TARGETS`, or
in the ``allowed_targets`` the caller adds. A prefix such as ``torch.`` cannot be made safe:
under it are functions that run a shell command (``torch.utils.collect_env.run``), execute
source text (``torch.fx.graph_module._exec_with_source``), unpickle (``torch.serialization.load``),
download (``torch.utils.model_zoo.load_url``) or write files (``torchvision.io.write_file``).

:data:`SAFE_TARGETS` is every target that lazydet's shipped configs (``conf/`` and
``projects/*/configs``) use, plus the other optimizers and schedulers of ``torch.optim``: classes
that build models, datasets, optimizers and schedules from the values they are given. They read
the files a config names (datasets, ``train.init_checkpoint`` through lazydet's safe loader) and
write only under the run's output directory. A test keeps the list in step with ``conf/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import ConfigError
from .lazy import ARGS, LOCATE, TARGET, target_nodes

__all__ = ["SAFE_TARGETS", "check_targets"]

SAFE_TARGETS: frozenset[str] = frozenset(
    {
        # data
        "lazydet.data.DatasetMapper",
        "lazydet.data.build_test_loader",
        "lazydet.data.build_train_loader",
        "lazydet.data.flip_indices_from_metadata",
        "lazydet.data.large_scale_jitter",
        "lazydet.data.resize_longest_edge",
        "lazydet.data.test_augmentations",
        "lazydet.data.train_augmentations",
        "torchvision.transforms.v2.Compose",
        "torchvision.transforms.v2.RandomHorizontalFlip",
        # models
        "lazydet.modeling.anchor_generator.DefaultAnchorGenerator",
        "lazydet.modeling.backbone.FPN",
        "lazydet.modeling.backbone.LastLevelMaxPool",
        "lazydet.modeling.backbone.LastLevelP6P7",
        "lazydet.modeling.backbone.ResNet",
        "lazydet.modeling.backbone.SimpleFeaturePyramid",
        "lazydet.modeling.backbone.ViT",
        "lazydet.modeling.meta_arch.GeneralizedRCNN",
        "lazydet.modeling.meta_arch.RetinaNet",
        "lazydet.modeling.proposal.RPN",
        "lazydet.modeling.proposal.StandardRPNHead",
        "lazydet.modeling.roi_heads.FastRCNNConvFCHead",
        "lazydet.modeling.roi_heads.FastRCNNOutputLayers",
        "lazydet.modeling.roi_heads.KRCNNConvDeconvUpsampleHead",
        "lazydet.modeling.roi_heads.MaskRCNNConvUpsampleHead",
        "lazydet.modeling.roi_heads.StandardROIHeads",
        # optimizers
        "lazydet.engine.optim.param_groups",
        "torch.optim.SGD",
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.RMSprop",
        # schedules
        "torch.optim.lr_scheduler.ConstantLR",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "torch.optim.lr_scheduler.ExponentialLR",
        "torch.optim.lr_scheduler.LinearLR",
        "torch.optim.lr_scheduler.MultiStepLR",
        "torch.optim.lr_scheduler.SequentialLR",
        "torch.optim.lr_scheduler.StepLR",
        # training and evaluation settings
        "lazydet.engine.train_config.TrainConfig",
        "lazydet.evaluation.COCOEvaluator",
    }
)


def allowed_names(extra: Iterable[str] | str | None) -> frozenset[str]:
    """:data:`SAFE_TARGETS` plus the exact import paths in ``extra`` (prefixes are refused)."""
    if extra is None:
        return SAFE_TARGETS
    if isinstance(extra, str):
        extra = (extra,)
    extra = tuple(extra)
    for name in extra:
        if not isinstance(name, str) or not name or name.endswith(".") or name.endswith("*"):
            raise ConfigError(
                f"allowed_targets takes exact import paths ('mypkg.heads.MyHead'); got {name!r}. "
                "A prefix would allow every function under it, including ones that run code."
            )
    return SAFE_TARGETS | frozenset(extra)


def check_targets(cfg: Any, allowed: frozenset[str], *, source: str = "config") -> None:
    """Raise ConfigError naming every target of ``cfg`` that is not in ``allowed``.

    Targets are ``_target_`` values and, for a class or function stored as a value
    (``{_target_: lazydet.config.locate, _args_: [path]}``), the path it names.
    """
    bad: list[str] = []
    for key, node in target_nodes(cfg):
        target = node[TARGET]
        names = [a for a in node.get(ARGS, ())] if target == LOCATE else [target]
        for name in names or [target]:
            if not isinstance(name, str) or name not in allowed:
                bad.append(f"'{key or '<root>'}' names {name!r}")
    if bad:
        bad.sort()
        names = sorted({b.split(" names ", 1)[1] for b in bad})
        raise ConfigError(
            f"{source}: untrusted config with targets outside lazydet.config.SAFE_TARGETS: "
            + "; ".join(bad)
            + ". Building them could run any code. If you trust them, add them: "
            f"load(path, trusted=False, allowed_targets=[{', '.join(names)}]), or, if you trust "
            "the whole file, load(path, trusted=True)."
        )
