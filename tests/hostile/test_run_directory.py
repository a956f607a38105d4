"""Crafted run directories: nothing is written over what the run does not own (issue #22 point 3).

Each case starts from a copy of one finished tiny run (``tests/engine/tiny_conf/tiny.py``, 6
iterations), runs ``lazydet.train`` on it in a way that must be refused or must change nothing,
and compares every file's bytes (sha256) before and after. ``.lock`` is the lock itself (it
holds the last holder's pid); the two logs may gain lines when the model was already built.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"
CONF_DIR = ENGINE_TESTS / "tiny_conf"
LOGS = {"train.log", "log.txt"}


def _hashes(root: Path, *, skip: set[str] = frozenset()) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip and p.name != ".lock"
    }


def _train(cwd: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAZYDET_CONFIG_PATH": str(CONF_DIR), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ENGINE_TESTS), env.get("PYTHONPATH", "")])
    args = [
        sys.executable, "-m", "lazydet.train", "conf=tiny",
        f"dataloader.train.dataset.json_file={data / 'annotations.json'}",
        f"dataloader.train.dataset.image_root={data}", *extra,
    ]  # fmt: skip
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    from lazydet.data.datasets import generate_shapes

    root = tmp_path_factory.mktemp("run_directory")
    data = root / "shapes"
    generate_shapes(data, num_images=6, image_size=32, seed=1)
    run_dir = root / "run"
    done = _train(root, data, "schedule.max_iter=6", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"config.py", "config.yaml", ".hydra/overrides.yaml", "model_final.pth"} <= set(
        _hashes(run_dir)
    )
    return run_dir, data


# (case, extra overrides, exit status, message, files that may change)
# Each case costs a process start (seconds on a busy 2-core machine): some run with -m slow only.
SLOW = pytest.mark.slow
CASES = [
    ("shorter max_iter", ["schedule.max_iter=4"], 2, "below the iteration", set()),
    ("finished, same max_iter", ["schedule.max_iter=6"], 0, "is finished", set()),
    pytest.param("unknown device", ["schedule.max_iter=12", "train.device=tpu"], 2,
                 "not a device", set(), marks=SLOW),
    pytest.param("model of another config", ["schedule.max_iter=12", "model.num_classes=5"], 2,
                 "does not fit the model", LOGS, marks=SLOW),
]  # fmt: skip


@pytest.mark.parametrize(("case", "extra", "status", "message", "may_change"), CASES)
def test_a_refused_rerun_changes_no_file(
    tmp_path, finished_run, case, extra, status, message, may_change
) -> None:
    source, data = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    before = _hashes(run_dir, skip=may_change)
    done = _train(tmp_path, data, f"hydra.run.dir={run_dir}", *extra)
    assert done.returncode == status, done.stderr[-2000:]
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert _hashes(run_dir, skip=may_change) == before
    if case == "model of another config":
        # The message names both configs: the run's own config.py and this command's.
        assert str(run_dir / "config.py") in done.stderr and "model.num_classes=5" in done.stderr


def test_a_directory_in_use_is_refused_before_hydra_writes(tmp_path, finished_run) -> None:
    source, data = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    before = _hashes(run_dir)  # logs included: nothing at all is written
    with open(run_dir / ".lock", "r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid {os.getpid()}\n")
        held.flush()
        done = _train(tmp_path, data, f"hydra.run.dir={run_dir}", "schedule.max_iter=12")
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"is in use by a training process (pid {os.getpid()})" in done.stderr
    assert _hashes(run_dir) == before


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_run_directory_is_refused(tmp_path, finished_run, value) -> None:
    # An unset shell variable (hydra.run.dir=$RUN): the run would land in the current directory.
    source, data = finished_run
    cwd = tmp_path / "cwd"
    shutil.copytree(source, cwd)
    before = _hashes(cwd)
    done = _train(cwd, data, f"hydra.run.dir={value}")
    assert done.returncode == 2 and "the run directory is empty" in done.stderr, done.stderr
    assert _hashes(cwd) == before and sorted(os.listdir(cwd)) == sorted(os.listdir(source))


@pytest.mark.slow
def test_resume_false_moves_the_old_config_files_aside_with_the_checkpoints(
    tmp_path, finished_run
) -> None:
    source, data = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    owned = _hashes(run_dir, skip=LOGS)
    done = _train(
        tmp_path, data, f"hydra.run.dir={run_dir}", "schedule.max_iter=4", "train.resume=false"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (aside,) = run_dir.glob("superseded-*")
    # Every file of the old run, config files included, is in superseded-*/ byte for byte.
    assert _hashes(aside) == owned
    assert "schedule.max_iter=4" in (run_dir / ".hydra" / "overrides.yaml").read_text()
