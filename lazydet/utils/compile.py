"""Helpers that keep lazydet's own code free of torch.compile graph breaks (docs/ops.md)."""

from __future__ import annotations

import torch


def check_all_true(condition: torch.Tensor, message: str, error: type[Exception]) -> None:
    """Raise ``error(message)`` unless every element of the bool tensor ``condition`` is True.

    Eagerly this is a plain ``if`` (one host sync). Under ``torch.compile`` a Python branch on a
    tensor's value would break the graph, so the check becomes ``torch._assert_async``, which
    stays in the graph and raises ``RuntimeError(message)`` when the compiled code runs.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(condition.all(), message)
    elif not condition.all():
        raise error(message)
