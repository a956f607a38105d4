"""``load_weights``: put the weights of a checkpoint file (any naming lazydet knows) into a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lazydet.modeling.weights.detectron2_names import (
    convert_detectron2_state_dict,
    is_detectron2_state_dict,
)
from lazydet.modeling.weights.formats import checkpoint_from_object, read_checkpoint
from lazydet.modeling.weights.torchvision_names import (
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
        renamed: model name -> checkpoint name, for the tensors that were renamed.
    """

    source: str
    naming: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every model tensor was loaded and every checkpoint tensor was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
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
        return "\n".join(lines)


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
    # DistributedDataParallel / torch.compile wrappers prefix every name.
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
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
    detectron2_to_rgb: bool = True,
) -> LoadReport:
    """Load a checkpoint into ``model`` and report what matched.

    The checkpoint may be a path (a lazydet checkpoint, a torchvision ``.pth`` state dict, a
    Detectron2 ``.pkl``: see ``lazydet.modeling.weights.formats``) or an in-memory state dict.
    Its naming (lazydet, torchvision, Detectron2) is recognised from the names, converted for this
    model, and the tensors whose names and shapes match are copied in; the rest is reported.
    ``python -m lazydet.train ... train.init_checkpoint=PATH`` calls this.

    Args:
        model: the lazydet model to load into (its parameters and buffers are overwritten in
            place, on their own device and dtype).
        checkpoint: a file path or a state dict.
        strict: raise instead of reporting when anything is missing, unexpected or mismatched.
        detectron2_to_rgb: for Detectron2 checkpoints, reverse the stem conv's input channels so
            the BGR-trained weights work on lazydet's RGB images (see ``docs/weights.md``).

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
    usable = {
        name: value
        for name, value in converted.items()
        if name in expected and value.shape == expected[name].shape
    }
    if not usable:
        sample = ", ".join(list(state_dict)[:3])
        model_sample = ", ".join(list(expected)[:3])
        raise ValueError(
            f"{source}: 0 of {len(expected)} parameters of {type(model).__name__} matched the "
            f"checkpoint's {len(state_dict)} tensors (names such as {sample}; the model expects "
            f"names such as {model_sample}). The checkpoint is probably for another architecture "
            "(or a naming lazydet does not convert: lazydet, torchvision and Detectron2 are known)."
        )

    report = LoadReport(
        source=source,
        naming=naming,
        loaded=sorted(usable),
        missing=[name for name in expected if name not in converted],
        unexpected=[sources[name] for name in converted if name not in expected],
        mismatched=[
            (name, tuple(converted[name].shape), tuple(expected[name].shape))
            for name in expected
            if name in converted and converted[name].shape != expected[name].shape
        ],
        renamed={name: sources[name] for name in usable if sources[name] != name},
    )
    if strict and not report.complete:
        raise ValueError(f"load_weights(strict=True): the load was incomplete.\n{report}")

    with torch.no_grad():
        targets = dict(model.state_dict(keep_vars=True))
        for name, value in usable.items():
            targets[name].copy_(value.to(device=targets[name].device, dtype=targets[name].dtype))
    return report
