"""What a lazydet checkpoint says about itself, so a predictor can be built from the file alone.

Like torchvision's ``Weights.meta`` (categories, transforms, recipe), every lazydet checkpoint
carries under ``"metadata"``:

``lazydet_version``
    The lazydet that wrote it.
``class_names``
    One name per class id, in id order (``class_names[i]`` is class id ``i``).
``input_format``
    ``"RGB"`` or ``"BGR"``: the channel order the model's first layer expects.
``config`` / ``config_format``
    The experiment's config as YAML (``"yaml"``, data: ``config_from_metadata`` reads it with
    ``lazydet.config.load(..., trusted=False)``, so only allow-listed targets can be built), or,
    for a config YAML cannot hold, as the Python text of ``lazydet.config.to_py`` (``"py"``:
    read back only with ``trusted=True``, since loading it runs it). Checkpoints of lazydet
    before this change stored ``"py"`` always. ``None`` when no config was given.
``keypoint_names`` / ``keypoint_flip_map`` / ``keypoint_skeleton``
    For keypoint models: the names in output order, the pairs a horizontal flip swaps, and the
    pairs a visualizer joins; ``None`` otherwise.

Only strings, lists and tuples are stored, so ``torch.load(weights_only=True)`` reads them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata as _package_metadata
from pathlib import Path
from typing import Any

from lazydet.checkpoint.formats import CheckpointError, torch_load_file

__all__ = ["build_metadata", "config_from_metadata", "lazydet_version", "read_metadata"]

INPUT_FORMATS = ("RGB", "BGR")


def lazydet_version() -> str:
    """The installed lazydet's version (``"0+unknown"`` when run from a tree never installed)."""
    try:
        return _package_metadata.version("lazydet")
    except _package_metadata.PackageNotFoundError:
        return "0+unknown"


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"build_metadata: {what} must be a list of strings, got {value!r}.")
    names = list(value)
    bad = [name for name in names if not isinstance(name, str) or not name]
    if bad:
        raise TypeError(f"build_metadata: {what} must hold non-empty strings; found {bad[:3]!r}.")
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise ValueError(
            f"build_metadata: {what} repeats {duplicates[:5]}; each name must be unique "
            "(a name maps back to one id)."
        )
    return names


def _pairs(value: Any, what: str, keypoint_names: list[str] | None) -> list[tuple[str, str]]:
    if keypoint_names is None:
        raise ValueError(f"build_metadata: {what} needs keypoint_names (the names it refers to).")
    items = list(value.items()) if isinstance(value, Mapping) else list(value)
    pairs = []
    for item in items:
        if isinstance(item, (str, bytes)) or not isinstance(item, Iterable):
            raise TypeError(f"build_metadata: {what} entries are (name, name) pairs, got {item!r}.")
        pair = tuple(item)
        if len(pair) != 2 or not all(isinstance(name, str) for name in pair):
            raise TypeError(f"build_metadata: {what} entries are (name, name) pairs, got {item!r}.")
        unknown = [name for name in pair if name not in keypoint_names]
        if unknown:
            raise ValueError(
                f"build_metadata: {what} names {unknown}, which keypoint_names "
                f"{keypoint_names} does not contain."
            )
        pairs.append(pair)
    return pairs


def _config_text(config: Any) -> tuple[str, str]:
    # Imported here: lazydet.config is only needed when a config is stored or rebuilt.
    from lazydet.config import ConfigError, from_container, to_py, to_yaml

    if not isinstance(config, Mapping):
        try:  # an OmegaConf DictConfig, as Hydra hands to an app
            from omegaconf import DictConfig

            is_omegaconf = isinstance(config, DictConfig)
        except ImportError:  # pragma: no cover
            is_omegaconf = False
        if not is_omegaconf:
            raise TypeError(
                "build_metadata: config must be the experiment's config (a lazydet Config or "
                f"a dict of top-level names), got {type(config).__name__}."
            )
    tree = from_container(config)
    # YAML first: it is data, read back untrusted (no code runs until instantiate, and then only
    # allow-listed targets). Python text is the fallback for a config YAML cannot hold; reading
    # that back runs it, so it is only done with trusted=True.
    try:
        text = to_yaml(tree)
        if _yaml_round_trips(text, tree):
            return text, "yaml"
        yaml_error: Exception = ValueError("the YAML text does not load back equal")
    except Exception as error:
        yaml_error = error
    try:
        return to_py(tree), "py"
    except ConfigError as python_error:
        raise ValueError(
            f"build_metadata: the config cannot be stored as YAML ({yaml_error}) nor as "
            f"Python ({python_error}); a predictor could not rebuild the model from it."
        ) from python_error


def _yaml_round_trips(text: str, tree: Any) -> bool:
    from omegaconf import OmegaConf

    from lazydet.config import from_container, to_container

    try:
        return to_container(from_container(OmegaConf.to_container(OmegaConf.create(text)))) == (
            to_container(tree)
        )
    except Exception:
        return False


def build_metadata(
    *,
    class_names: Iterable[str],
    input_format: str = "RGB",
    config: Any = None,
    keypoint_names: Iterable[str] | None = None,
    keypoint_flip_map: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    keypoint_skeleton: Iterable[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The ``"metadata"`` entry of a lazydet checkpoint (see the module docstring).

    Args:
        class_names: one unique name per class id, in id order.
        input_format: ``"RGB"`` or ``"BGR"``, the channel order the model expects.
        config: the experiment's config (``Config``, a dict of top-level names, or Hydra's
            ``DictConfig``); stored as YAML (Python text if YAML cannot hold it) so the model
            can be rebuilt.
        keypoint_names: keypoint names in the order the keypoint head outputs them.
        keypoint_flip_map: ``{"left_eye": "right_eye", ...}`` or ``[(a, b), ...]``.
        keypoint_skeleton: ``[(a, b), ...]`` pairs of keypoint names to draw joined.

    Raises:
        TypeError, ValueError: a malformed argument (the message names it and the value).
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(
            f"build_metadata: input_format={input_format!r}; use one of {INPUT_FORMATS}."
        )
    names = _names(class_names, "class_names")
    if not names:
        raise ValueError("build_metadata: class_names is empty; give one name per class id.")
    keypoints = None if keypoint_names is None else _names(keypoint_names, "keypoint_names")
    flip_map = (
        None
        if keypoint_flip_map is None
        else _pairs(keypoint_flip_map, "keypoint_flip_map", keypoints)
    )
    skeleton = (
        None
        if keypoint_skeleton is None
        else _pairs(keypoint_skeleton, "keypoint_skeleton", keypoints)
    )
    config_text, config_format = (None, None) if config is None else _config_text(config)
    return {
        "lazydet_version": lazydet_version(),
        "class_names": names,
        "input_format": input_format,
        "config": config_text,
        "config_format": config_format,
        "keypoint_names": keypoints,
        "keypoint_flip_map": flip_map,
        "keypoint_skeleton": skeleton,
    }


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``"metadata"`` of the lazydet checkpoint at ``path``, without reading its tensors.

    Raises:
        FileNotFoundError, IsADirectoryError: no file at ``path``.
        CheckpointError: truncated, corrupt or not a checkpoint, or a checkpoint without lazydet
            metadata (torchvision and Detectron2 weights carry none: take class names and the
            input format from the config instead).
    """
    path = Path(path)
    # mmap: the tensors are mapped, not read, so this is fast on a multi-GB checkpoint.
    payload = torch_load_file(path, what="read_metadata", mmap=True, verify=False)
    metadata = payload.get("metadata") if isinstance(payload, Mapping) else None
    if not isinstance(metadata, Mapping) or "lazydet_version" not in metadata:
        raise CheckpointError(
            f"read_metadata: {path} carries no lazydet metadata (no 'metadata' entry with a "
            "'lazydet_version'): it is a plain state dict or another library's weights. Take "
            "the class names and input format from the config, or re-save it with "
            "save_checkpoint(path, {'model': ..., 'metadata': build_metadata(...)})."
        )
    return dict(metadata)


def config_from_metadata(metadata: Mapping[str, Any], *, trusted: bool = False):
    """Rebuild the stored config (a ``lazydet.config.Config``) from checkpoint metadata.

    The config is read as data: a YAML config is loaded with ``lazydet.config.load(...,
    trusted=False)``, which refuses any ``_target_`` outside the allow-list before anything is
    built. A config stored as Python text (checkpoints written before YAML became the stored
    form, or configs YAML cannot hold) runs when loaded, so it is refused unless
    ``trusted=True``: pass that only for a checkpoint you trust as you would a config file,
    or build the model from the experiment's config instead (``conf=...``).

    Args:
        metadata: ``read_metadata(path)``.
        trusted: load the stored config as trusted code (any target; Python text is executed).

    Raises:
        CheckpointError: the checkpoint was saved without a config, its config is Python text
            and ``trusted`` is False, or the text does not load (or names a target outside the
            allow-list; the message names it).
    """
    from lazydet.config import ConfigError, load

    text, kind = metadata.get("config"), metadata.get("config_format")
    if not isinstance(text, str) or kind not in ("py", "yaml"):
        raise CheckpointError(
            "config_from_metadata: the checkpoint was saved without its config "
            "(build_metadata(config=None)); build the model from the experiment's config file."
        )
    if kind == "py" and not trusted:
        raise CheckpointError(
            "config_from_metadata: the checkpoint stores its config as Python text (written by "
            f"lazydet {metadata.get('lazydet_version')}), and loading it would run that code. "
            "Give the experiment's config instead (python -m lazydet.predict conf=EXPERIMENT "
            "train.init_checkpoint=PATH, or Predictor.from_checkpoint(path, config=cfg)), or, "
            "for a checkpoint you trust as you would a config file, pass trusted=True."
        )
    # lazydet.config.load reads files: the text goes to a private temporary file.
    with tempfile.TemporaryDirectory(prefix="lazydet_checkpoint_config_") as directory:
        file = Path(directory) / f"checkpoint_config.{kind}"
        file.write_text(text, encoding="utf-8")
        try:
            return load(file, trusted=trusted)
        except ConfigError as error:
            detail = str(error).replace(str(file), "the stored config")
            if not trusted and "outside the allowed" in detail:
                raise CheckpointError(
                    f"config_from_metadata: read as data (untrusted), {detail} For a "
                    "checkpoint you trust (e.g. your own run with a project's classes), pass "
                    "trusted=True (Predictor.from_checkpoint(path, trusted=True)), or give the "
                    "experiment's config (conf=... / config=cfg)."
                ) from error
            raise CheckpointError(
                f"config_from_metadata: the stored config does not load with this lazydet "
                f"(saved by lazydet {metadata.get('lazydet_version')}): {detail}"
            ) from error
