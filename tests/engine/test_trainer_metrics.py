"""metrics.jsonl, TensorBoard events, the console line, and the eval hook's numbers."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lazydet.engine.hooks import EvalHook, MetricsHook
from lazydet.engine.trainer import Trainer
from lazydet.utils.events import ConsoleWriter, JSONLinesWriter, TensorBoardWriter


class Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([3.0]))

    def forward(self, batch):
        return {"loss_a": (self.w**2).sum(), "loss_b": self.w.abs().sum() * 0.5}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_and_eval_numbers_reach_every_writer(tmp_path: Path, caplog) -> None:
    model = Quadratic()
    evaluations = []

    def evaluate():
        model.eval()  # as inference_on_dataset does; the hook puts training mode back
        evaluations.append(float(model.w.detach()))
        return {"bbox": {"AP": 10.0 * len(evaluations), "AP50": 50.0}}

    def open_writers(start_iter: int):
        return [
            ConsoleWriter(max_iter=6),
            JSONLinesWriter(tmp_path / "metrics.jsonl", start_iter=start_iter),
            TensorBoardWriter(tmp_path / "tb", start_iter=start_iter),
        ]

    trainer = Trainer(
        model=model,
        data_loader=iter(lambda: [None], 0),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scheduler=None,
        max_iter=6,
        hooks=[EvalHook(evaluate, period=4), MetricsHook(period=2, open_writers=open_writers)],
    )
    with caplog.at_level(logging.INFO, logger="lazydet.train"):
        trainer.train(handle_signals=False)
    assert model.training
    lines = _read_jsonl(tmp_path / "metrics.jsonl")
    train_lines = [x for x in lines if "total_loss" in x]
    assert [x["iteration"] for x in train_lines] == [2, 4, 6]
    # Means over the logged window, checked against the hand-computed losses of w = 3 * 0.8^i
    # (SGD on w^2 + |w|/2 with lr 0.1: w <- w - 0.1 (2w + 0.5)).
    w = [3.0]
    for _ in range(6):
        w.append(w[-1] - 0.1 * (2 * w[-1] + 0.5))
    expected_a = [(w[0] ** 2 + w[1] ** 2) / 2, (w[2] ** 2 + w[3] ** 2) / 2]
    assert [x["loss_a"] for x in train_lines[:2]] == [
        pytest.approx(v, rel=1e-6) for v in expected_a
    ]
    assert all(x["lr"] == 0.1 for x in train_lines)
    assert {"time", "data_time", "eta_seconds", "max_mem_mb"} <= set(train_lines[0])
    assert train_lines[-1]["eta_seconds"] == 0
    eval_lines = [x for x in lines if "bbox/AP" in x]
    assert [(x["iteration"], x["bbox/AP"]) for x in eval_lines] == [(4, 10.0), (6, 20.0)]
    assert evaluations == [pytest.approx(w[4]), pytest.approx(w[6])]
    assert "iter 2/6  eta" in caplog.text and "loss_a" in caplog.text and "lr 0.1" in caplog.text

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("total_loss")] == [2, 4, 6]
    assert [e.value for e in events.Scalars("bbox/AP")] == [10.0, 20.0]


def test_a_resumed_jsonl_drops_the_killed_runs_later_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    writer = JSONLinesWriter(path)
    for it in (2, 4, 6, 8):
        writer.write(it, {"loss": float(it), "bad": math.nan})
    writer.close()
    with path.open("a") as f:
        f.write('{"iteration": 10, "lo')  # cut by the kill
    # Resumed from the checkpoint after 4 steps: 6, 8 and the cut line go, 2 and 4 stay.
    resumed = JSONLinesWriter(path, start_iter=4)
    resumed.write(6, {"loss": 60.0})
    resumed.close()
    lines = _read_jsonl(path)
    assert [(x["iteration"], x["loss"]) for x in lines] == [(2, 2.0), (4, 4.0), (6, 60.0)]
    assert lines[0]["bad"] == "nan"  # JSON has no NaN: written as text, every line parses


def test_the_main_job_evaluates_from_the_config_and_says_where_things_are(
    tmp_path, monkeypatch, capsys
) -> None:
    from tiny_train import CONF_DIR, WeightNorm

    from lazydet.config import L, compose
    from lazydet.data.datasets import generate_shapes
    from lazydet.train import run

    data = tmp_path / "shapes"
    generate_shapes(data, num_images=6, image_size=32, seed=2)
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(CONF_DIR))
    cfg = compose(
        "tiny",
        [
            f"dataloader.train.dataset.json_file={data / 'annotations.json'}",
            f"dataloader.train.dataset.image_root={data}",
            "schedule.max_iter=4",
            "train.eval_period=2",
        ],
    )
    cfg.evaluator = L(WeightNorm)()
    report = run(cfg, tmp_path / "run")
    lines = _read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [x["iteration"] for x in lines if "tiny/weight_norm" in x] == [2, 4]
    final = torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)["model"]
    norm = torch.linalg.vector_norm(torch.cat([v.flatten().float() for v in final.values()]))
    assert lines[-1]["tiny/weight_norm"] == pytest.approx(float(norm), rel=1e-6)
    out = capsys.readouterr().out
    assert f"run directory: {tmp_path / 'run'}" in out
    assert f"tensorboard --logdir {tmp_path / 'run' / 'tensorboard'}" in out
    assert f"final weights: {tmp_path / 'run' / 'model_final.pth'}" in out
    assert report["final_weights"] == str(tmp_path / "run" / "model_final.pth")
    assert report["tiny/weight_norm"] == f"{float(norm):.4g}"
