"""``load_weights``: put the weights of a checkpoint file (any naming lazydet knows) into a model."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lazydet.checkpoint.detectron2_names import (
    convert_detectron2_state_dict,
    is_detectron2_state_dict,
)
from lazydet.checkpoint.formats import checkpoint_from_object, read_checkpoint
from lazydet.checkpoint.layout import ModelLayout
from lazydet.checkpoint.named_weights import (
    is_weights_name,
    named_weights,
    resolve_named_weights,
)
from lazydet.checkpoint.torchvision_names import (
    convert_torchvision_state_dict,
    is_torchvision_state_dict,
)

__all__ = ["LoadReport", "WeightsMisfitError", "load_weights"]

# How many names a report or an error lists before "... and N more".
_SHOWN = 10
# How many names a misfit error lists per kind (missing, mismatched).
_SHOWN_IN_ERROR = 5


class WeightsMisfitError(ValueError):
    """A checkpoint leaves tensors missing or mismatched in the part of the model it is for.

    A ``ValueError``: the commands print it and exit 1 before writing anything.
    """


@dataclass
class LoadReport:
    """What ``load_weights`` did.

    Attributes:
        source: the checkpoint file (or ``"<state dict>"``).
        naming: the naming the checkpoint was read with: ``"lazydet"``, ``"torchvision"`` or
            ``"detectron2"``.
        loaded: model names that received a tensor.
        missing: model names the checkpoint has no tensor for (they keep their values).
        unexpected: checkpoint names with no place in the model (original checkpoint names).
        mismatched: ``(model name, checkpoint shape, model shape)`` for tensors whose name matched
            but whose shape did not (not loaded).
        mismatched_dtype: ``(model name, checkpoint dtype, model dtype)`` for tensors whose name
            and shape matched but whose kind of number did not (an integer, bool or complex
            tensor for a float parameter, or the reverse): not loaded, since a cast would
            silently change the values.
        nonfinite: model names of loaded tensors holding NaN or inf (a warning is also issued:
            such weights usually make the model return nothing).
        kept: training-state buffers a torchvision or Detectron2 checkpoint cannot hold (e.g.
            RetinaNet's ``foreground_ema``): left as initialised, and not counted as missing.
        renamed: model name -> checkpoint name, for the tensors that were renamed.
        part: the prefix of the part of the model the checkpoint is meant to fill: ``""`` (the
            whole model) for a detector or lazydet checkpoint, the ResNet's prefix
            (``"backbone.bottom_up."``) for an ImageNet classifier file.
        skipped: model names left at their initial values because they start with one of the
            ``skip`` prefixes (``train.init_checkpoint_skip``).
        looks_like: what the file's names say it was made for (``"torchvision_mask_rcnn_fpn"``,
            ``"an ImageNet ResNet-50 (model.backbone=resnet50)"``), or None.
    """

    source: str
    naming: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    mismatched_dtype: list[tuple[str, torch.dtype, torch.dtype]] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    part: str = ""
    skipped: list[str] = field(default_factory=list)
    looks_like: str | None = None

    @property
    def misfit(self) -> list[str]:
        """Model names in ``part`` that the checkpoint did not fill: missing, or mismatched in
        shape or kind of number (``skipped`` and ``kept`` names are not misfits)."""
        names = [
            *self.missing,
            *(name for name, _, _ in self.mismatched),
            *(name for name, _, _ in self.mismatched_dtype),
        ]
        return [name for name in names if name.startswith(self.part)]

    def misfit_message(self, model_name: str = "the model") -> str:
        """The error text for a misfit: counts, the first names, the preset the file suits."""
        part = f"the ResNet at {self.part.rstrip('.')}" if self.part else "the whole model"
        lines = [
            f"{self.source} does not fit {model_name} ({part}): loaded {len(self.loaded)} "
            f"tensors, {len(self.misfit)} left at their initial values."
        ]
        missing = [name for name in self.missing if name.startswith(self.part)]
        if missing:
            shown = ", ".join(_group(missing)[:_SHOWN_IN_ERROR])
            lines.append(
                f"Missing from the file ({len(missing)}): {shown}" + _more(_group(missing))
            )
        mismatched = [
            f"{name} (file {list(a)}, model {list(b)})"
            for name, a, b in self.mismatched
            if name.startswith(self.part)
        ] + [
            f"{name} (file {a}, model {b})"
            for name, a, b in self.mismatched_dtype
            if name.startswith(self.part)
        ]
        if mismatched:
            shown = ", ".join(mismatched[:_SHOWN_IN_ERROR])
            lines.append(f"Mismatched ({len(mismatched)}): {shown}" + _more(mismatched))
        if self.looks_like:
            lines.append(f"The file looks made for {self.looks_like}.")
        modules = sorted({name.rsplit(".", 1)[0] for name in self.misfit})
        skip = ",".join(_common_prefixes(modules)[:_SHOWN_IN_ERROR])
        lines.append(
            "Use the preset it was made for; or, to start these layers from their initial "
            f"values (fine-tuning with another num_classes), set train.init_checkpoint_skip=[{skip}]; "
            "or train.init_checkpoint_strict=false to load what fits and list the rest."
        )
        return "\n".join(lines)

    def require_fit(self, model_name: str = "the model") -> None:
        """Raise ``WeightsMisfitError`` (with ``misfit_message``) if ``misfit`` is not empty."""
        if self.misfit:
            raise WeightsMisfitError(self.misfit_message(model_name))

    @property
    def complete(self) -> bool:
        """Every model tensor was loaded and every checkpoint tensor was used."""
        return not (self.missing or self.unexpected or self.mismatched or self.mismatched_dtype)

    def __str__(self) -> str:
        total = (
            len(self.loaded)
            + len(self.missing)
            + len(self.mismatched)
            + len(self.mismatched_dtype)
            + len(self.kept)
        )
        lines = [
            f"Loaded {len(self.loaded)} of {total} model tensors from {self.source} "
            f"({self.naming} names)."
        ]

        def section(title: str, names: list[str]) -> None:
            if names:
                lines.append(f"{title} ({len(names)}):")
                lines.extend(f"  {name}" for name in names[:_SHOWN])
                if len(names) > _SHOWN:
                    lines.append(f"  ... and {len(names) - _SHOWN} more")

        section("Missing from the checkpoint, left as initialised", _group(self.missing))
        section("In the checkpoint but not in the model, ignored", _group(self.unexpected))
        section(
            "Shape mismatch, not loaded",
            [f"{name}: checkpoint {list(a)} vs model {list(b)}" for name, a, b in self.mismatched],
        )
        section(
            "Type mismatch, not loaded",
            [f"{name}: checkpoint {a} vs model {b}" for name, a, b in self.mismatched_dtype],
        )
        section("Loaded, but holding NaN or inf", self.nonfinite)
        section(f"Training state {self.naming} checkpoints do not hold, left as is", self.kept)
        section("Left at their initial values by the skip prefixes", _group(self.skipped))
        return "\n".join(lines)


def _more(names: list[str]) -> str:
    return f" and {len(names) - _SHOWN_IN_ERROR} more." if len(names) > _SHOWN_IN_ERROR else "."


def _common_prefixes(modules: list[str]) -> list[str]:
    """Shortest list of module prefixes covering ``modules``: the parents two levels up when
    several children share one (``roi_heads.box_predictor.cls_score`` and ``.bbox_pred`` give
    ``roi_heads.box_predictor``)."""
    parents: dict[str, list[str]] = {}
    for module in modules:
        parts = module.split(".")
        parent = ".".join(parts[:2]) if len(parts) > 2 else module
        parents.setdefault(parent, []).append(module)
    return list(parents)


def _under(name: str, prefixes: Sequence[str]) -> bool:
    """``name`` is ``prefix`` or inside it, on a dotted boundary."""
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def _is_imagenet_classifier(state_dict: Mapping[str, Tensor]) -> bool:
    """A ResNet classifier's file (torchvision's ImageNet weights): the stem and ``fc`` at the top
    level, no detector parts."""
    return "fc.weight" in state_dict and "conv1.weight" in state_dict


def _resnet_depth(state_dict: Mapping[str, Tensor]) -> int | None:
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"layer3\.(\d+)\.", k))}
    bottleneck = "layer1.0.conv3.weight" in state_dict
    return {
        (False, 2): 18,
        (False, 6): 34,
        (True, 6): 50,
        (True, 23): 101,
        (True, 36): 152,
    }.get((bottleneck, len(blocks)))


def looks_like(state_dict: Mapping[str, Tensor], naming: str) -> str | None:
    """The preset (or backbone option) a state dict's names say it was made for, or None."""
    names = list(state_dict)

    def has(*prefixes: str) -> bool:
        return any(name.startswith(prefixes) for name in names)

    if _is_imagenet_classifier(state_dict):
        depth = _resnet_depth(state_dict)
        if depth is None:
            return "an ImageNet ResNet classifier"
        return (
            f"an ImageNet ResNet-{depth} (a COCO recipe with model.backbone=resnet{depth}, "
            f"train.init_checkpoint=torchvision:resnet{depth})"
        )
    if has("roi_heads.mask", "mask_head."):
        arch = "mask_rcnn_fpn"
    elif has("roi_heads.keypoint"):
        arch = "keypoint_rcnn_fpn"
    elif has("roi_heads.", "rpn.", "proposal_generator."):
        arch = "faster_rcnn_fpn"
    elif has("head.classification_head", "head.cls_subnet", "head.cls_score"):
        arch = "retinanet_fpn"
    elif has("backbone.net.patch_embed"):
        return "a ViT backbone (model.backbone=vit_b or vit_l)"
    else:
        return None
    prefix = {"torchvision": "torchvision_", "detectron2": "detectron2_"}.get(naming, "")
    return f"conf={prefix}{arch}"


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"


def _all_finite(value: Tensor) -> bool:
    """No NaN or inf in ``value``. min/max propagate NaN and expose inf, and take one pass without
    allocating (4x faster than ``isfinite(value).all()`` on a 40M-parameter model)."""
    if not (value.is_floating_point() or value.is_complex()) or value.numel() == 0:
        return True
    if value.is_complex():
        value = torch.view_as_real(value)
    low, high = torch.aminmax(value)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _same_kind(a: torch.dtype, b: torch.dtype) -> bool:
    """float16 -> float32 is a safe cast; integer -> float, bool -> float, complex -> real not."""
    return _kind(a) == _kind(b)


def _group(names: list[str]) -> list[str]:
    """Collapse ``x.weight``, ``x.bias``, ... into ``x.{bias, weight}`` for shorter reports."""
    groups: dict[str, list[str]] = {}
    for name in names:
        module, _, parameter = name.rpartition(".")
        groups.setdefault(module, []).append(parameter)
    return [
        f"{module}.{{{', '.join(sorted(params))}}}" if len(params) > 1 else f"{module}.{params[0]}"
        for module, params in groups.items()
    ]


def _strip_wrapper_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    # DistributedDataParallel / torch.compile wrappers prefix every name, in either nesting
    # order (torch.compile(DDP(model)) gives "_orig_mod.module.", DDP(compile(model)) the reverse).
    stripped = True
    while stripped and state_dict:
        stripped = False
        for prefix in ("module.", "_orig_mod."):
            if all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                stripped = True
    return state_dict


def _candidates(
    state_dict: dict[str, Tensor], model: nn.Module, detectron2_to_rgb: bool
) -> list[tuple[str, dict[str, Tensor], dict[str, str]]]:
    """The state dict under each naming it may follow: ``(naming, converted, sources)``."""
    candidates = [("lazydet", state_dict, {k: k for k in state_dict})]
    if is_torchvision_state_dict(state_dict):
        candidates.append(("torchvision", *convert_torchvision_state_dict(state_dict, model)))
    if is_detectron2_state_dict(state_dict):
        candidates.append(
            (
                "detectron2",
                *convert_detectron2_state_dict(state_dict, model, to_rgb=detectron2_to_rgb),
            )
        )
    return candidates


def _matches(converted: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> int:
    return sum(
        1
        for name, value in converted.items()
        if name in expected and value.shape == expected[name].shape
    )


def load_weights(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Tensor],
    *,
    strict: bool = False,
    require_fit: bool = False,
    skip: Sequence[str] = (),
    detectron2_to_rgb: bool | None = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` and report what matched.

    The checkpoint may be a name of ``lazydet.checkpoint.named_weights``
    (``"torchvision:resnet50"``: the file is taken from torch.hub's cache, downloaded if absent),
    a path (a lazydet checkpoint, a torchvision ``.pth`` state dict, a
    Detectron2 ``.pkl``: see ``lazydet.checkpoint.formats``) or an in-memory state dict.
    Its naming (lazydet, torchvision, Detectron2) is recognised from the names, converted for this
    model, and the tensors whose names and shapes match are copied in; the rest is reported.
    ``python -m lazydet.train ... train.init_checkpoint=PATH`` calls this.

    Args:
        model: the lazydet model to load into (its parameters and buffers are overwritten in
            place, on their own device and dtype).
        checkpoint: a weights name, a file path or a state dict.
        strict: raise instead of reporting when anything is missing, unexpected or mismatched.
        require_fit: raise ``WeightsMisfitError``, before changing the model, when the file
            leaves tensors missing or mismatched in the part it is for (``LoadReport.part``:
            the whole model, or the ResNet for an ImageNet classifier file). Unexpected tensors
            (an ImageNet file's ``fc``) are allowed.
        skip: model-name prefixes (``"roi_heads.box_predictor"``) left at their initial values
            and not counted as misfits (``report.skipped``): starting new heads on pretrained
            weights.
        detectron2_to_rgb: for Detectron2 checkpoints (trained on BGR images), reverse the stem
            conv's input channels so the weights work on RGB images. None (the default) follows
            the model's one channel-order setting, ``model.input_format``: reversed for ``"RGB"``
            (and models without the attribute), kept for ``"BGR"``; a bool overrides it.

    Returns:
        A ``LoadReport``; ``print(report)`` lists missing / unexpected / mismatched names.

    Raises:
        FileNotFoundError, ValueError: unreadable or unsafe file (the message names it).
        ValueError: no tensor of the checkpoint fits the model ("0 of N ... matched": most likely
            a checkpoint of another architecture), or ``strict`` and the load was incomplete,
            or an unknown weights name.
        WeightsMisfitError: ``require_fit`` and a misfit (a ``ValueError``).
        WeightsUnavailableError: a weights name whose file is not cached and cannot be
            downloaded (an ``OSError``).
    """
    if isinstance(checkpoint, Mapping):
        loaded = checkpoint_from_object(checkpoint, "<state dict>")
    elif is_weights_name(checkpoint):
        if named_weights(str(checkpoint)).imagenet and ModelLayout.of(model).resnet is None:
            raise ValueError(
                f"{checkpoint} is an ImageNet ResNet, but {type(model).__name__} has no ResNet "
                "to put it in (the ViT options have no ImageNet file lazydet converts: set "
                "train.init_checkpoint=null to train from scratch)."
            )
        loaded = read_checkpoint(resolve_named_weights(str(checkpoint)))
        loaded.source = f"{checkpoint} ({loaded.source})"
    elif isinstance(checkpoint, (str, Path)):
        loaded = read_checkpoint(checkpoint)
    else:
        raise TypeError(
            "load_weights(model, checkpoint): checkpoint must be a file path or a state dict, "
            f"got {type(checkpoint).__name__}."
        )
    source = loaded.source
    state_dict = _strip_wrapper_prefix(loaded.state_dict)
    expected = model.state_dict()

    if detectron2_to_rgb is None:
        detectron2_to_rgb = getattr(model, "input_format", "RGB") != "BGR"
    naming, converted, sources = max(
        _candidates(state_dict, model, detectron2_to_rgb),
        key=lambda candidate: _matches(candidate[1], expected),
    )
    # BatchNorm's step counter means nothing to lazydet's frozen norms; not worth a report line.
    converted = {
        name: value
        for name, value in converted.items()
        if name in expected or not name.endswith("num_batches_tracked")
    }
    shaped = {
        name: value
        for name, value in converted.items()
        if name in expected and value.shape == expected[name].shape
    }
    usable = {
        name: value
        for name, value in shaped.items()
        if _same_kind(value.dtype, expected[name].dtype)
    }
    skipped = [name for name in expected if _under(name, skip)]
    usable = {name: value for name, value in usable.items() if not _under(name, skip)}
    if not usable:
        sample = ", ".join(list(state_dict)[:3])
        model_sample = ", ".join(list(expected)[:3])
        raise ValueError(
            f"{source}: 0 of {len(expected)} parameters of {type(model).__name__} matched the "
            f"checkpoint's {len(state_dict)} tensors (names such as {sample}; the model expects "
            f"names such as {model_sample}). The checkpoint is probably for another architecture "
            "(or a naming lazydet does not convert: lazydet, torchvision and Detectron2 are known)"
            + (
                f"; {len(shaped)} matched in name and shape but hold "
                f"{sorted({_kind(v.dtype) for v in shaped.values()})} numbers where the model "
                "has other kinds (e.g. integer tensors for float parameters)."
                if shaped
                else "."
            )
        )

    absent = [name for name in expected if name not in converted and not _under(name, skip)]
    # A foreign file cannot hold lazydet's training-state buffers; a lazydet file should.
    exempt = set(ModelLayout.of(model).training_state) if naming != "lazydet" else set()
    report = LoadReport(
        source=source,
        naming=naming,
        loaded=sorted(usable),
        missing=[name for name in absent if name not in exempt],
        kept=[name for name in absent if name in exempt],
        unexpected=[sources[name] for name in converted if name not in expected],
        mismatched=[
            (name, tuple(converted[name].shape), tuple(expected[name].shape))
            for name in expected
            if name in converted
            and converted[name].shape != expected[name].shape
            and not _under(name, skip)
        ],
        mismatched_dtype=[
            (name, shaped[name].dtype, expected[name].dtype)
            for name in shaped
            if name not in usable and not _under(name, skip)
        ],
        nonfinite=sorted(name for name, value in usable.items() if not _all_finite(value)),
        renamed={name: sources[name] for name in usable if sources[name] != name},
        # An ImageNet classifier is meant for the ResNet only: the rest of a detector is new.
        part=(ModelLayout.of(model).resnet or "") if _is_imagenet_classifier(state_dict) else "",
        skipped=skipped,
        looks_like=looks_like(state_dict, naming),
    )
    if report.nonfinite:
        shown = ", ".join(report.nonfinite[:_SHOWN])
        more = len(report.nonfinite) - _SHOWN
        warnings.warn(
            f"{source}: {len(report.nonfinite)} loaded tensors hold NaN or inf values: {shown}"
            + (f" and {more} more" if more > 0 else "")
            + ". A model with such weights typically returns no detections or NaN losses; "
            "the checkpoint was probably saved after training diverged: use an earlier one.",
            RuntimeWarning,
            stacklevel=2,
        )
    if strict and not report.complete:
        raise ValueError(f"load_weights(strict=True): the load was incomplete.\n{report}")
    if require_fit:
        report.require_fit(type(model).__name__)

    with torch.no_grad():
        targets = dict(model.state_dict(keep_vars=True))
        for name, value in usable.items():
            targets[name].copy_(value.to(device=targets[name].device, dtype=targets[name].dtype))
    return report
