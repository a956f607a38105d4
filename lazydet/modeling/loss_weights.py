"""The ``loss_weights`` argument of the modules that return losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def loss_weights_with_defaults(
    owner: str, loss_weights: Mapping[str, float] | None, loss_names: Sequence[str]
) -> dict[str, float]:
    """Each of ``loss_names`` with its multiplier: the one given in ``loss_weights``, else 1.

    Raises ``ValueError`` naming ``owner`` and the keys that are not among ``loss_names`` (a
    misspelt key would otherwise leave its loss at weight 1 without a word).
    """
    unknown = set(loss_weights or {}) - set(loss_names)
    if unknown:
        names = " and/or ".join(repr(name) for name in loss_names)
        raise ValueError(f"{owner} loss_weights has unknown keys {sorted(unknown)}; use {names}.")
    return {**dict.fromkeys(loss_names, 1.0), **(loss_weights or {})}
