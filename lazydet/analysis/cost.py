"""What a model costs: parameters (trainable, frozen) and FLOPs per module.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one real forward pass (the
operators torch knows a formula for: convolutions, matmuls, attention...; one multiply-add
counts as 2 FLOPs; elementwise ops, pooling and normalisation count 0). A detector's heads work
on the proposals of that pass, so their count depends on the input; the input is stated with the
table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["ModuleCost", "count_parameters", "format_cost_table", "measure_cost"]


@dataclass
class ModuleCost:
    """One module's row: ``name`` is its path in the model (``""`` for the model itself)."""

    name: str
    type: str
    trainable: int
    frozen: int
    flops: int
    flops_by_op: dict[str, int] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return self.trainable + self.frozen


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` parameter counts of ``module`` and its children (shared ones once)."""
    trainable = frozen = 0
    for p in module.parameters():  # parameters() yields a shared tensor once
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def measure_cost(
    model: nn.Module, run: Callable[[nn.Module], Any], *, max_depth: int | None = None
) -> list[ModuleCost]:
    """Parameters and FLOPs of every module of ``model`` (to ``max_depth`` dots deep).

    ``run(model)`` does the forward pass to count (e.g. ``lambda m: m(inputs)``); it runs under
    ``torch.no_grad()``. Rows come in the model's module order, the model itself first.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        run(model)
    # FlopCounterMode names modules "<RootClass>.<path>" and the whole pass "Global".
    by_path: dict[str, dict[str, int]] = {}
    root = type(model).__name__
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        path = "" if name == root else name.removeprefix(root + ".")
        by_path[path] = {str(op).removeprefix("aten."): int(n) for op, n in ops.items()}
    total_ops = {
        str(op).removeprefix("aten."): int(n)
        for op, n in counter.get_flop_counts().get("Global", {}).items()
    }
    by_path[""] = total_ops

    def ops_of(path: str, module: nn.Module) -> dict[str, int]:
        # A container that is never called (ModuleList, ModuleDict) has no record of its own:
        # its children's sum stands for it.
        if path in by_path:
            return by_path[path]
        summed: dict[str, int] = {}
        for name, child in module.named_children():
            for op, n in ops_of(f"{path}.{name}" if path else name, child).items():
                summed[op] = summed.get(op, 0) + n
        return summed

    rows = []
    for path, module in model.named_modules():
        if max_depth is not None and path and path.count(".") >= max_depth:
            continue
        ops = ops_of(path, module)
        trainable, frozen = count_parameters(module)
        rows.append(
            ModuleCost(
                name=path,
                type=type(module).__name__,
                trainable=trainable,
                frozen=frozen,
                flops=sum(ops.values()),
                flops_by_op=ops,
            )
        )
    return rows


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_cost_table(rows: list[ModuleCost], *, title: str = "") -> str:
    """A fixed-width table: module, type, parameters, trainable, frozen, FLOPs, share of FLOPs."""
    total = rows[0].flops if rows else 0
    header = ("module", "type", "params", "trainable", "frozen", "FLOPs", "% FLOPs")
    table = [header]
    for row in rows:
        depth = row.name.count(".") + (1 if row.name else 0)
        table.append(
            (
                "  " * depth + (row.name.rsplit(".", 1)[-1] if row.name else "(model)"),
                row.type,
                _human(row.parameters),
                _human(row.trainable),
                _human(row.frozen),
                _human(row.flops),
                f"{100.0 * row.flops / total:.1f}" if total else "-",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [title] if title else []
    for i, r in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
