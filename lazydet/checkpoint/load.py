"""``load_weights``: put the weights of a checkpoint file (any naming lazydet knows) into a model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
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
from lazydet.checkpoint.torchvision_names import (
    convert_torchvision_state_dict,
    is_torchvision_state_dict,
)

__all__ = ["LoadReport", "load_weights"]

# How many names a report or an error lists before "... and N more".
_SHOWN = 10


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
        return "\n".join(lines)


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
    detectron2_to_rgb: bool | None = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` and report what matched.

    The checkpoint may be a path (a lazydet checkpoint, a torchvision ``.pth`` state dict, a
    Detectron2 ``.pkl``: see ``lazydet.checkpoint.formats``) or an in-memory state dict.
    Its naming (lazydet, torchvision, Detectron2) is recognised from the names, converted for this
    model, and the tensors whose names and shapes match are copied in; the rest is reported.
    ``python -m lazydet.train ... train.init_checkpoint=PATH`` calls this.

    Args:
        model: the lazydet model to load into (its parameters and buffers are overwritten in
            place, on their own device and dtype).
        checkpoint: a file path or a state dict.
        strict: raise instead of reporting when anything is missing, unexpected or mismatched.
        detectron2_to_rgb: for Detectron2 checkpoints (trained on BGR images), reverse the stem
            conv's input channels so the weights work on RGB images. None (the default) follows
            the model's one channel-order setting, ``model.input_format``: reversed for ``"RGB"``
            (and models without the attribute), kept for ``"BGR"``; a bool overrides it.

    Returns:
        A ``LoadReport``; ``print(report)`` lists missing / unexpected / mismatched names.

    Raises:
        FileNotFoundError, ValueError: unreadable or unsafe file (the message names it).
        ValueError: no tensor of the checkpoint fits the model ("0 of N ... matched": most likely
            a checkpoint of another architecture), or ``strict`` and the load was incomplete.
    """
    if isinstance(checkpoint, Mapping):
        loaded = checkpoint_from_object(checkpoint, "<state dict>")
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

    absent = [name for name in expected if name not in converted]
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
            if name in converted and converted[name].shape != expected[name].shape
        ],
        mismatched_dtype=[
            (name, shaped[name].dtype, expected[name].dtype)
            for name in shaped
            if name not in usable
        ],
        nonfinite=sorted(name for name, value in usable.items() if not _all_finite(value)),
        renamed={name: sources[name] for name in usable if sources[name] != name},
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

    with torch.no_grad():
        targets = dict(model.state_dict(keep_vars=True))
        for name, value in usable.items():
            targets[name].copy_(value.to(device=targets[name].device, dtype=targets[name].dtype))
    return report
