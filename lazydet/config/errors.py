"""Errors raised by lazydet's config system.

Every message names the thing at fault (a file, a config key such as ``model.roi_heads.box_predictor``,
an override) and says what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config is malformed: a bad file, a typo in an argument, a wrong type, a missing value."""


class InstantiationError(RuntimeError):
    """Building an object from a config node failed; ``path`` is the node's key in the config."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A " Did you mean 'x'?" suffix, or "" when no candidate is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean '{close[0]}'?"
    return " Did you mean one of " + ", ".join(f"'{c}'" for c in close) + "?"


def make_importable_hint(package: str) -> str:
    """A " If 'pkg' is your own code..." suffix for a top-level package Python cannot import."""
    return (
        f" If '{package}' is your own code (a project's package), make it importable: "
        f"`pip install -e` it or add the folder that holds '{package}' to PYTHONPATH."
    )
