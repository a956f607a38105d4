"""Messages that point the right way (issue #18, point 6): each slip a user makes on the command
line gets one message naming the lazydet way, exit 2, and nothing written."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_python
from PIL import Image

from lazydet.config import ConfigError, apply_overrides, compose
from lazydet.config.command_line import (
    detectron2_habits,
    vet_command_line,
    vet_train_command_line,
)
from lazydet.structures import Boxes, Instances

# --- primitive types of plain keys -----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "shown"),
    [("train.max_iter=ten", "'ten'"), ("train.max_iter=2.5", "2.5"), ("train.seed=true", "True")],
)
def test_a_plain_key_keeps_the_kind_of_its_value(fixture_conf, override, shown):
    # toy's train node is a plain dict (no _target_ whose signature could say the type).
    with pytest.raises(ConfigError) as info:
        vet_command_line(["conf=toy", override], multirun=False)
    key = override.split("=")[0]
    assert f"Override '{override}': '{key}' holds int" in str(info.value)
    assert f"got {shown}" in str(info.value) and "Give a whole number" in str(info.value)


def test_a_plain_key_takes_its_own_kind_and_plus_plus_replaces_freely(fixture_conf):
    assert "conf=toy" in vet_command_line(["conf=toy", "train.max_iter=20"], multirun=False)
    cfg = compose("toy", ["train.max_iter=20", "++train.seed=abc"])
    assert cfg.train.max_iter == 20 and cfg.train.seed == "abc"
    cfg = compose("toy")
    with pytest.raises(ConfigError, match="holds int 10"):
        apply_overrides(cfg, ["train.max_iter=ten"])
    assert cfg.train.max_iter == 10  # a refused override changes nothing


def test_schedule_max_iter_is_checked_while_vetting():
    with pytest.raises(ConfigError, match=r"'schedule.max_iter' holds int 1200.*got 'ten'"):
        vet_command_line(["conf=quickstart", "schedule.max_iter=ten"], multirun=False)


def test_a_type_error_exits_2_before_anything_is_written(fixture_conf, tmp_path):
    # Before: the value reached the run, which wrote outputs/ (config, logs) and then failed or,
    # for a model-only experiment like toy, went through with a string where a number belongs.
    done = run_python(["-m", "lazydet.train", "conf=toy", "train.max_iter=ten"], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("lazydet.train: Override 'train.max_iter=ten'")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- a group named without its parent --------------------------------------------------------


def test_a_group_without_its_parent_names_the_full_group():
    with pytest.raises(ConfigError) as info:
        vet_command_line(["conf=mask_rcnn_fpn", "backbone=resnet50"], multirun=False)
    assert "'backbone' is the group model.backbone" in str(info.value)
    assert str(info.value).endswith("write model.backbone=resnet50.")
    with pytest.raises(ConfigError, match="write model.backbone=vit_b"):
        apply_overrides(compose("quickstart"), ["backbone=vit_b"])


def test_a_key_that_only_ends_like_a_group_keeps_its_own_message():
    # Not an option of model/backbone: an ordinary unknown key, not a group slip.
    with pytest.raises(ConfigError, match="'backbone' is not in the config"):
        vet_command_line(["conf=quickstart", "backbone=big"], multirun=False)


# --- Detectron2 habits -----------------------------------------------------------------------

HABITS = [
    (["--eval-only"], "python -m lazydet.evaluate conf=quickstart train.init_checkpoint=PATH"),
    (["--resume"], "lazydet resumes on its own"),
    (["--config-file", "exp.py"], "--config-file is Detectron2's; lazydet writes conf=exp.py."),
    (["--config-file=configs/x.yaml"], "lazydet's configs are Python: conf=NAME"),
    (["--num-gpus", "8"], "lazydet writes train.num_processes=8"),
    (["MODEL.WEIGHTS", "r50.pkl"], "lazydet writes train.init_checkpoint=r50.pkl."),
    (["SOLVER.BASE_LR", "0.01"], "lazydet writes optimizer.lr=0.01."),
    (["OUTPUT_DIR", "out"], "lazydet writes hydra.run.dir=out."),
]


@pytest.mark.parametrize(("words", "advice"), HABITS)
def test_detectron2_habits_get_one_line_naming_the_lazydet_way(
    words, advice, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        vet_train_command_line(["conf=quickstart", *words])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lazydet.train: ") and advice in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_several_habits_one_line_each_and_lazydet_words_are_left_alone():
    lines = detectron2_habits(
        ["--num-gpus", "2", "--resume", "MODEL.WEIGHTS=x.pth", "conf=a", "train.seed=1", "-m"],
        "lazydet.train",
    )
    assert len(lines) == 3
    assert detectron2_habits(["conf=a", "optimizer.lr=0.1", "--cfg", "job", "-m"], "x") == []


@pytest.mark.parametrize(
    ("command", "words", "advice"),
    [
        ("lazydet.evaluate", ["--eval-only"], "lazydet.evaluate only evaluates: drop it."),
        (
            "lazydet.evaluate",
            ["--num-gpus", "4"],
            "torchrun --nproc-per-node=N -m lazydet.evaluate",
        ),
        ("lazydet.predict", ["MODEL.WEIGHTS", "m.pkl"], "train.init_checkpoint=m.pkl"),
        ("lazydet.predict", ["OUTPUT_DIR", "out"], "lazydet writes output=out."),
        ("lazydet.predict", ["--config-file", "a.yaml"], "conf=NAME"),
    ],
)
def test_evaluate_and_predict_refuse_the_habits_too(command, words, advice, capsys):
    import importlib

    main = importlib.import_module(command).main
    with pytest.raises(SystemExit) as info:
        main(["conf=quickstart", *words])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{command}: ") and advice in err


# --- pictures where every detection is under score_threshold ---------------------------------


class FixedPredictor:
    """Gives the same two detections (scores 0.37 and 0.2) on every image."""

    batch_size = 2
    class_names = ("circle", "square")
    keypoint_names = None
    keypoint_skeleton = None

    def predict(self, images):
        return [
            Instances(
                tuple(image.shape[1:]),
                pred_boxes=Boxes(torch.tensor([[4.0, 4.0, 30.0, 30.0], [10.0, 8.0, 50.0, 40.0]])),
                scores=torch.tensor([0.37, 0.2]),
                pred_classes=torch.tensor([0, 1]),
            )
            for image in images
        ]


@pytest.fixture
def images(tmp_path) -> list[Path]:
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(path)
        paths.append(path)
    return paths


def test_predict_says_when_every_detection_is_under_the_threshold(images, tmp_path, caplog):
    from lazydet.predict import predict_images

    with caplog.at_level(logging.WARNING):
        predict_images(FixedPredictor(), images, tmp_path / "out", score_threshold=0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "all 6 detections (on 3 of 3 images) score under score_threshold=0.5 (the best: 0.370), "
        "so the pictures show none; lower it to draw them: score_threshold=0.3."
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predict_images(FixedPredictor(), images, tmp_path / "out2", score_threshold=0.3)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_drawing_counts_what_it_shows_and_hides(images):
    from lazydet.evaluation.pictures import draw_predictions, lower_threshold
    from lazydet.evaluation.predictor import to_image_tensor

    image = to_image_tensor(images[0], what="image")
    (instances,) = FixedPredictor().predict([image])
    hidden_all = draw_predictions(FixedPredictor(), image, instances, 0.5)
    assert (hidden_all.shown, hidden_all.hidden) == (0, 2)
    assert hidden_all.best_score == pytest.approx(0.37)
    one = draw_predictions(FixedPredictor(), image, instances, 0.3)
    assert (one.shown, one.hidden) == (1, 1)
    # Nothing drawn is the bare image; one box drawn changes pixels.
    bare = draw_predictions(FixedPredictor(), image, instances[:0], 0.5).picture
    assert np.array_equal(np.asarray(hidden_all.picture), np.asarray(bare))
    assert not np.array_equal(np.asarray(one.picture), np.asarray(bare))
    assert [lower_threshold(s) for s in (0.37, 0.042, 0.004, 0.9)] == [0.3, 0.04, 0.0, 0.9]


def test_the_validation_grid_says_so_and_names_the_predict_command(images, tmp_path, caplog):
    from lazydet.evaluation.pictures import save_prediction_grid

    with caplog.at_level(logging.WARNING):
        path = save_prediction_grid(FixedPredictor(), images, tmp_path / "val_predictions.png")
    assert path.is_file()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("val_predictions.png: all 6 detections")
    assert f"checkpoint={tmp_path / 'model_final.pth'}" in warning
    assert warning.endswith("score_threshold=0.3.")


# --- one log file per run ---------------------------------------------------------------------


def test_a_run_has_one_log_file_with_every_console_line(fixture_conf, tmp_path):
    # Before: Hydra's train.log and lazydet's log.txt held the same lines (and the first ones,
    # "Config saved to ...", reached train.log only).
    done = run_python(["-m", "lazydet.train", "conf=toy", "hydra.run.dir=run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.glob("*.log")) == []
    log = (run_dir / "log.txt").read_text().splitlines()
    assert log[0].endswith(f"Config saved to {run_dir / 'config.py'}")
    console = [line for line in done.stdout.splitlines() if "lazydet." in line]
    assert console and len(console) == len(log)
    # The console keeps Hydra's format with its timestamps; each line is in the file.
    for shown, logged in zip(console, log):
        assert shown.startswith("[20") and shown.split("] - ", 1)[1] == logged.split("] ", 1)[1]


def test_the_first_lines_of_a_torchrun_rank_go_to_its_own_file(tmp_path, monkeypatch):
    # Before the process group is joined (the run's first lines), torchrun's variables say the
    # rank: rank 2 must not write "Config saved" into rank 0's log.txt.
    from lazydet.utils.logging import setup_logging

    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        setup_logging(tmp_path).error("early line")
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.rank2.txt"]
    assert "[rank2]" in (tmp_path / "log.rank2.txt").read_text()
