"""Exact resume: the data stream's position, and real runs killed and restarted.

The subprocess tests run ``python -m lazydet.train`` on ``tests/engine/tiny_conf/tiny.py``
(a dropout model on 12 shapes images of 32 px, 24 iterations of batch 3, random resize and
flip): the final weights of a run killed with SIGKILL (or stopped with SIGINT) and started
again with the same command must equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from tiny_train import CONF_DIR

from lazydet.data import DatasetMapper, build_train_loader
from lazydet.data.datasets import generate_shapes

REPO = Path(__file__).resolve().parents[2]


def _mixed_records(tmp_path: Path, n: int = 14) -> list[dict]:
    records = []
    for i in range(n):
        h, w = (20, 28) if i % 3 else (28, 20)  # 2/3 landscape, 1/3 portrait
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            path
        )
        records.append(
            {
                "file_name": str(path),
                "image_id": i,
                "height": h,
                "width": w,
                "annotations": [{"bbox": (1.0, 1.0, 5.0, 5.0), "category_id": 0, "iscrowd": 0}],
            }
        )
    return records


def _fingerprint(batch: list[dict]) -> list[tuple[int, float]]:
    # Image id and pixel sum: the sum changes with the random flip and colour jitter.
    return [(d["image_id"], float(d["image"].float().sum())) for d in batch]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_loader_resumes_at_the_exact_sample(tmp_path: Path, num_workers: int) -> None:
    records = _mixed_records(tmp_path)
    mapper = DatasetMapper(
        augmentations=T.Compose([T.RandomHorizontalFlip(0.5), T.ColorJitter(brightness=0.5)]),
        is_train=True,
    )

    def loader():
        return build_train_loader(
            dataset=records, mapper=mapper, total_batch_size=3, num_workers=num_workers, seed=4
        )

    reference = [_fingerprint(b) for b in islice(iter(loader()), 12)]
    first = loader()
    it = iter(first)
    head = [_fingerprint(next(it))]
    # Stop where images wait in a bucket: they are part of the position and must not be lost.
    while not any((state := first.state_dict())["waiting"]):
        head.append(_fingerprint(next(it)))
    assert len(head) < 12
    del it
    resumed = loader()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # plain data: survives any format
    tail = [_fingerprint(b) for b in islice(iter(resumed), 12 - len(head))]
    assert head + tail == reference


def _run_train(run_dir: Path, data: Path, *extra: str, wait: bool = True):
    env = dict(os.environ)
    env["LAZYDET_CONFIG_PATH"] = str(CONF_DIR)
    env["PYTHONPATH"] = os.pathsep.join([str(CONF_DIR.parent), env.get("PYTHONPATH", "")])
    args = [
        sys.executable, "-m", "lazydet.train", "conf=tiny",
        f"dataloader.train.dataset.json_file={data / 'annotations.json'}",
        f"dataloader.train.dataset.image_root={data}",
        "schedule.max_iter=24", f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip
    if not wait:
        return subprocess.Popen(
            args,
            cwd=run_dir.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    return subprocess.run(
        args, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=300
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model_final.pth", weights_only=True)["model"]


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_shapes")
    generate_shapes(root, num_images=12, image_size=32, seed=1)
    return root


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, shapes_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = _run_train(run_dir, shapes_dir)
    assert result.returncode == 0, result.stderr
    assert f"final weights: {run_dir / 'model_final.pth'}" in result.stdout
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in result.stdout
    return run_dir


def test_sigint_then_sigkill_then_resume_ends_bit_identical(
    tmp_path, shapes_dir, reference_run
) -> None:
    run_dir = tmp_path / "run"
    # Ctrl-C: a checkpoint at the next step boundary, a message, exit status 130.
    process = _run_train(run_dir, shapes_dir, wait=False)
    _wait_for(run_dir / "model_0000004.pth", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "stopped by SIGINT after iteration" in stderr and "Traceback" not in stderr
    saved = (run_dir / "last_checkpoint").read_text().strip()
    stopped_at = torch.load(run_dir / saved, weights_only=True)["iteration"]
    assert 4 <= stopped_at < 24 and saved == f"model_{stopped_at:07d}.pth"

    # Resumed with two loader workers (the reference has none: the sample stream does not
    # depend on it), then killed outright once a later periodic checkpoint exists.
    later = 4 * (stopped_at // 4 + 1)
    process = _run_train(run_dir, shapes_dir, "dataloader.train.num_workers=2", wait=False)
    _wait_for(run_dir / f"model_{later:07d}.pth", process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (run_dir / "model_final.pth").exists(), "the run ended before the kill"

    result = _run_train(run_dir, shapes_dir, "dataloader.train.num_workers=2")
    assert result.returncode == 0, result.stderr
    assert f"Resumed from {run_dir}" in (run_dir / "log.txt").read_text()
    final, expected = _final_weights(run_dir), _final_weights(reference_run)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    # metrics.jsonl holds each logged iteration once, in order, with the reference's losses.
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    logged = [x["iteration"] for x in lines]
    assert logged == sorted(set(logged)) and logged[-1] == 24
    by_iteration = {x["iteration"]: x["total_loss"] for x in reference}
    # Lines written right after a resume average fewer steps; the others match exactly.
    assert sum(by_iteration.get(x["iteration"]) == x["total_loss"] for x in lines) >= len(lines) - 2
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_resume_false_starts_over_and_keeps_the_old_files(
    tmp_path, shapes_dir, reference_run
) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    again = _run_train(run_dir, shapes_dir, "schedule.max_iter=24")
    # A finished run started again writes nothing and says how to train longer.
    assert again.returncode == 0 and "is finished (24 of 24 iterations" in again.stdout
    fresh = _run_train(run_dir, shapes_dir, "train.resume=false")
    assert fresh.returncode == 0, fresh.stderr
    (aside,) = run_dir.glob("superseded-*")
    assert (aside / "model_final.pth").is_file()
    final, expected = _final_weights(run_dir), _final_weights(reference_run)
    assert all(torch.equal(final[k], expected[k]) for k in expected)
