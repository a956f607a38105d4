"""The main job end to end: ``python -m lazydet.train conf=quickstart`` trains, evaluates on
``shapes_val`` and leaves its results, metrics and a picture in the run directory."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from helpers import run_python
from PIL import Image

from lazydet.evaluation import coco_evaluate


def test_quickstart_ends_with_ap_that_coco_evaluate_confirms_and_a_picture(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "LAZYDET_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("LAZYDET_CONFIG_PATH", None)
    command = ["-m", "lazydet.train", "conf=quickstart", f"hydra.run.dir={run_dir}"]
    done = run_python([*command, "schedule.max_iter=2", "train.log_period=1"], env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "segm/AP:" in done.stdout and "val_predictions.png" in done.stdout

    evaluations = [
        row
        for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "segm/AP" in row
    ]
    assert evaluations and evaluations[-1]["iteration"] == 2
    # The printed and logged AP (in percent, as Detectron2 reports it) is what the COCO API gives
    # for the results file the evaluator wrote into the run directory.
    gt_json = next((tmp_path / "cache" / "shapes").glob("*seed1/annotations.json"))
    results = run_dir / "coco_instances_results.json"
    for iou_type in ("bbox", "segm"):
        stats = coco_evaluate(gt_json, results, iou_type, engine="pycocotools", verbose=False).stats
        logged = evaluations[-1][f"{iou_type}/AP"]
        assert math.isclose(logged / 100, stats[0], rel_tol=1e-9, abs_tol=1e-12)

    with Image.open(run_dir / "val_predictions.png") as picture:
        assert picture.format == "PNG" and picture.width >= 512
    assert (run_dir / "model_final.pth").is_file()
    # The curves of the run (losses, lr, AP over iterations) are drawn at its end too.
    assert "curves.png" in done.stdout
    with Image.open(run_dir / "curves.png") as curves:
        assert curves.format == "PNG" and curves.width >= 512
