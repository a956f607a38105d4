import json

import numpy as np
import pytest

from lazydet.analysis.curves import find_runs, plot_curves, read_metrics, select_metrics, smooth
from lazydet.utils.events import JSONLinesWriter


def _tensorboard_reference(values, weight):
    # TensorBoard's scalar-card smoothing (tensorboard/webapp, "classic" EMA with debias),
    # written out step by step for three points.
    out, last = [], 0.0
    for n, v in enumerate(values, start=1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


def test_smooth_is_debiased_ema_and_skips_nan():
    values = [4.0, 2.0, 1.0]
    assert smooth(values, 0.6).tolist() == pytest.approx(_tensorboard_reference(values, 0.6))
    # first point equals the raw value (debiased), not 0.4 * 4
    assert smooth([4.0], 0.6)[0] == pytest.approx(4.0)
    with_nan = smooth([4.0, float("nan"), 2.0], 0.6)
    assert np.isnan(with_nan[1])
    assert with_nan[2] == pytest.approx(_tensorboard_reference([4.0, 2.0], 0.6)[1])
    assert smooth(values, 0.0).tolist() == values
    with pytest.raises(ValueError, match="smoothing=1"):
        smooth(values, 1.0)


def _write_run(path, losses, ap=None):
    writer = JSONLinesWriter(path / "metrics.jsonl")
    for i, loss in enumerate(losses, start=1):
        writer.write(i * 10, {"total_loss": loss, "loss_cls": loss / 2, "lr": 0.01, "time": 0.3})
    if ap is not None:
        writer.write(len(losses) * 10, {"bbox/AP": ap, "bbox/AP-person": ap})
    writer.close()


def test_read_metrics_and_select(tmp_path):
    _write_run(tmp_path / "a", [3.0, float("nan"), 1.0], ap=42.0)
    data = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert data["total_loss"][0].tolist() == [10, 20, 30]
    assert np.isnan(data["total_loss"][1][1])
    assert data["bbox/AP"][0].tolist() == [30]
    # per-category APs are not panels; total loss first
    assert select_metrics(list(data)) == ["total_loss", "loss_cls", "lr", "time", "bbox/AP"]


def test_broken_line_is_named_but_a_cut_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1, "lr": 0.1}\n{"iteration": 2, "lr"')
    assert read_metrics(path)["lr"][0].tolist() == [1]
    path.write_text('{"iteration": 1, "lr": 0.1}\nnot json\n{"iteration": 3, "lr": 0.1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2"):
        read_metrics(path)


@pytest.mark.slow
def test_sweep_directory_expands_to_its_jobs_and_plots(tmp_path):
    _write_run(tmp_path / "sweep" / "0", [3.0, 2.0, 1.0], ap=40.0)
    _write_run(tmp_path / "sweep" / "1", [4.0, 3.0, 2.0])
    runs = find_runs([tmp_path / "sweep"])
    assert list(runs) == ["0", "1"]
    out = plot_curves(runs, tmp_path / "curves.png")
    from PIL import Image

    assert Image.open(out).size[0] > 100
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no metrics.jsonl"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(ValueError, match="does not exist"):
        find_runs([tmp_path / "missing"])


def test_write_run_curves(tmp_path):
    from lazydet.analysis.curves import write_run_curves

    assert write_run_curves(tmp_path) is None  # nothing yet
    _write_run(tmp_path, [1.0, 0.5])
    assert write_run_curves(tmp_path) == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["iteration"] == 10
