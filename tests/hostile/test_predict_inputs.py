"""Crafted ``lazydet.predict`` command lines (issue #22 points 3 and 4): an output that would
land on an input and options that make no sense are refused with one line (exit 2) before
anything is loaded or written; the input files' bytes (sha256) are unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lazydet.config.command_line import UsageError
from lazydet.predict import run


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(folder / name)
    return folder


# (case, arguments with {photos} and {tmp} filled in, words the message must hold)
CASES = [
    ("output is the input", ["input={photos}", "output={photos}"], "is the input folder"),
    ("output inside the input", ["input={photos}", "output={photos}/out"], "inside the input"),
    ("output is the input, a trailing slash", ["input={photos}/", "output={photos}"], "input"),
    ("picture over the input file", ["input={photos}/a.png", "output={photos}"],
     "would be overwritten"),
    ("results json over an input", ["input={photos}/sub/c.png", "output={tmp}/out",
                                    "results={photos}/a.png"], None),
    ("results json over the input file", ["input={photos}/a.png", "output={tmp}/out",
                                          "results={photos}/a.png"], "would be overwritten"),
    ("score_threshold nan", ["input={photos}", "output={tmp}/out", "score_threshold=nan"],
     "score_threshold='nan'"),
    ("score_threshold above 1", ["input={photos}", "output={tmp}/out", "score_threshold=2"],
     "between 0 and 1"),
    ("max_images negative", ["show_gt=shapes_val", "output={tmp}/out", "max_images=-1"],
     "max_images='-1'"),
    ("batch_size zero", ["input={photos}", "output={tmp}/out", "batch_size=0"], "batch_size"),
    ("show_gt unknown", ["show_gt=nope", "output={tmp}/out"], "not a registered dataset"),
    ("input a fifo", ["input={tmp}/fifo", "output={tmp}/out"], "not a regular file"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "arguments", "message"), CASES)
def test_refused_before_anything_is_written(tmp_path, photos, case, arguments, message) -> None:
    os.mkfifo(tmp_path / "fifo")
    before = _hashes(photos)
    argv = [a.format(photos=photos, tmp=tmp_path) for a in arguments]
    if message is None:  # the json would replace a.png only if a.png were an input: allowed
        argv = [*argv, "checkpoint=/nonexistent.pth"]
        with pytest.raises((OSError, ValueError)):
            run(argv)
    else:
        with pytest.raises(UsageError, match=message) as raised:
            run(argv)
        assert "\n" not in str(raised.value)
    assert _hashes(photos) == before
    assert not (tmp_path / "out").exists() and not (photos / "out").exists()


def test_the_command_exits_2_with_one_line(tmp_path, photos, capsys) -> None:
    from lazydet.predict import main

    before = _hashes(photos)
    with pytest.raises(SystemExit) as ended:
        main([f"input={photos}", f"output={photos}"])
    assert ended.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lazydet.predict: output=") and "\n" not in err
    assert _hashes(photos) == before


@pytest.mark.slow
def test_an_image_that_cannot_be_resized_is_skipped_and_the_json_still_written(tmp_path) -> None:
    # 20000x2: the test resize (short edge 128 for shapes) makes it 0 px high, and torch refuses.
    import json

    import torch

    from lazydet.config import compose
    from lazydet.evaluation.predictor import Predictor
    from lazydet.predict import predict_images

    cfg = compose("retinanet_fpn", ["dataset=shapes", "train.init_checkpoint=random"])
    torch.manual_seed(0)
    predictor = Predictor.from_config(cfg, device="cpu", batch_size=2)
    rng = np.random.default_rng(0)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (2, 20000, 3), dtype=np.uint8)).save(images / "wide.png")
    out = tmp_path / "out"
    failed = predict_images(
        predictor,
        [images / "a.png", images / "wide.png"],
        out,
        results_json=out / "r.json",
        score_threshold=0.0,
    )
    assert failed == [str(images / "wide.png")]
    assert (out / "a.png").is_file() and not (out / "wide.png").exists()
    results = json.loads((out / "r.json").read_text())
    assert all(r["file_name"].endswith("a.png") for r in results)
