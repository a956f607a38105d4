"""Training curves from ``metrics.jsonl``: every loss, lr, time per iteration and each AP.

``metrics.jsonl`` is what ``lazydet.utils.events.JSONLinesWriter`` writes: one JSON object per
line, ``{"iteration": i, "total_loss": ..., "lr": ..., "bbox/AP": ...}``, non-finite numbers as
strings (``"nan"``). Runs are overlaid in one figure, one panel per metric, each run named; a
sweep's directory (no ``metrics.jsonl`` of its own, jobs below it) counts as its jobs.

Smoothing is TensorBoard's: an exponential moving average ``m = w * m + (1 - w) * x``, divided
by ``1 - w ** n`` (``n`` = finite points seen) so the first points are not pulled towards 0.
The raw values are drawn faintly behind the smoothed line; the weight is written on the figure.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CURVES_FILE",
    "find_runs",
    "plot_curves",
    "read_metrics",
    "select_metrics",
    "smooth",
    "write_run_curves",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def read_metrics(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (iterations, values)}`` from one ``metrics.jsonl`` (values float64, NaN kept).

    A last line cut short (a run killed while writing) is skipped with a warning; a broken line
    elsewhere is an error naming the file and line.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    series: dict[str, list[tuple[int, float]]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            iteration = int(record["iteration"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if number == len(lines):
                logger.warning("%s: skipping the last line, cut short (%s)", path, e)
                continue
            raise ValueError(
                f"{path}, line {number}: not a metrics record ({e}); expected a JSON object "
                'with an "iteration" (what lazydet.train writes).'
            ) from None
        for key, value in record.items():
            if key == "iteration":
                continue
            try:
                number_value = float(value)  # "nan" / "inf" are how the writer stores them
            except (TypeError, ValueError):
                continue  # not a scalar: nothing to plot
            series.setdefault(key, []).append((iteration, number_value))
    return {
        key: (np.array([i for i, _ in pts], dtype=np.int64), np.array([v for _, v in pts]))
        for key, pts in series.items()
    }


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average of ``values`` (``weight`` in [0, 1)).

    Non-finite values pass through unchanged and do not enter the average, as in TensorBoard.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing={weight} must be in [0, 1) (0: no smoothing).")
    out = np.array(values, dtype=np.float64)
    last, seen = 0.0, 0
    for i, value in enumerate(out):
        if not math.isfinite(value):
            continue
        last = last * weight + (1.0 - weight) * value
        seen += 1
        out[i] = last / (1.0 - weight**seen)
    return out


def _is_ap(key: str) -> bool:
    # "bbox/AP", "segm/AP50", "bbox/APs"...; per-category "bbox/AP-person" would be 80 panels.
    task, _, name = key.rpartition("/")
    return bool(task) and name.startswith("AP") and "-" not in name


def select_metrics(keys: Sequence[str]) -> list[str]:
    """The keys worth a panel, in a fixed order: losses, lr, time per iteration, then APs."""
    keys = set(keys)
    losses = sorted(k for k in keys if k == "total_loss" or k.startswith("loss"))
    losses.sort(key=lambda k: k != "total_loss")  # total first
    timing = [k for k in ("lr", "time", "data_time") if k in keys]
    aps = sorted(k for k in keys if _is_ap(k))
    return losses + timing + aps


def find_runs(paths: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """``{name: metrics.jsonl}`` for run directories (or ``metrics.jsonl`` files) and sweeps.

    A directory without ``metrics.jsonl`` stands for the runs below it (a sweep's jobs), named
    by their path relative to it. Names are the paths as given, shortened to what tells them apart.
    """
    found: dict[str, Path] = {}
    for given in paths:
        path = Path(given)
        if path.is_file():
            found[str(path.parent)] = path
        elif (path / METRICS_FILE).is_file():
            found[str(path)] = path / METRICS_FILE
        elif path.is_dir():
            below = sorted(path.rglob(METRICS_FILE))
            if not below:
                raise ValueError(
                    f"{str(path)!r} holds no {METRICS_FILE} (nor any below it): give a run "
                    "directory of lazydet.train (its output dir) or a sweep's directory."
                )
            for metrics in below:
                found[str(metrics.parent)] = metrics
        else:
            raise ValueError(f"{str(path)!r} does not exist (give a run directory).")
    if len(found) > 1:  # drop the common leading folders: "out/sweep/0" -> "0"
        common = os.path.commonpath(list(found))
        found = {(os.path.relpath(k, common) if common else k): v for k, v in found.items()}
    else:  # one run: its folder's name
        found = {(Path(k).name or k): v for k, v in found.items()}
    return found


def plot_curves(
    runs: Mapping[str, str | os.PathLike],
    output: str | os.PathLike,
    *,
    smoothing: float = 0.6,
    metrics: Sequence[str] | None = None,
    columns: int = 3,
    dpi: int = 80,
) -> Path:
    """Draw ``{name: metrics.jsonl}`` into one PNG at ``output``, one panel per metric.

    Args:
        runs: run name -> its ``metrics.jsonl`` (``find_runs`` makes this from directories).
        smoothing: TensorBoard's smoothing weight (0 draws the raw values only).
        metrics: the panels (default: ``select_metrics`` of every key the runs have).
    Returns the PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("No run to plot.")
    data = {name: read_metrics(path) for name, path in runs.items()}
    keys = list(metrics) if metrics else select_metrics({k for d in data.values() for k in d})
    if not keys:
        raise ValueError(
            f"{', '.join(map(str, runs.values()))}: no loss, lr, time or AP to plot yet."
        )
    smooth(np.zeros(1), smoothing)  # checks the weight before anything is drawn
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False, dpi=dpi
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        for r, (name, series) in enumerate(data.items()):
            if key not in series:
                continue
            its, values = series[key]
            color = colors[r % len(colors)]
            if smoothing > 0:
                ax.plot(its, values, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(its, smooth(values, smoothing), color=color, label=name, linewidth=1.4)
            else:
                ax.plot(its, values, color=color, label=name, linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if key.startswith("loss") or key == "total_loss":
            finite = np.concatenate([d[key][1] for d in data.values() if key in d])
            finite = finite[np.isfinite(finite)]
            if finite.size and finite.min() > 0 and finite.max() / finite.min() > 30:
                ax.set_yscale("log")  # losses spanning decades
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1 : len(keys)]:  # a run may lack the first metric: collect all names
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=min(len(labels), 4))
    note = (
        f"smoothing {smoothing} (TensorBoard's debiased exponential moving average; raw values faint)"
        if smoothing > 0
        else "no smoothing"
    )
    fig.suptitle(note, x=0.01, ha="left", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return output


def write_run_curves(run_dir: str | os.PathLike, *, smoothing: float = 0.6) -> Path | None:
    """Write ``RUN_DIR/curves.png`` from ``RUN_DIR/metrics.jsonl`` (the trainer's end of run).

    Returns the path, or None when there is nothing to draw yet (no file, no scalar).
    """
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file() or not select_metrics(read_metrics(metrics)):
        return None
    return plot_curves(
        {run_dir.name or str(run_dir): metrics}, run_dir / CURVES_FILE, smoothing=smoothing
    )
