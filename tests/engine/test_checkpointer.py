"""Checkpoint files of a run directory: keep-last-K, the pointer, corrupt files, RNG states."""

from __future__ import annotations

import errno
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lazydet.engine.checkpointer import (
    FINAL_CHECKPOINT,
    POINTER_FILE,
    Checkpointer,
    capture_rng_state,
    restore_rng_state,
)
from lazydet.engine.hooks import CheckpointHook
from lazydet.engine.trainer import NonFiniteLossError, Trainer


def _state(iteration: int) -> dict:
    model = nn.Linear(2, 2)
    return {
        "model": model.state_dict(),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict(),
        "iteration": iteration,
    }


def test_saves_keep_the_last_k_and_point_at_the_newest(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, max_to_keep=2, metadata={"class_names": ["a"]})
    for it in (10, 20, 30):
        ckpt.save(f"model_{it:07d}.pth", _state(it))
    assert [p.name for p in ckpt.periodic_checkpoints()] == [
        "model_0000020.pth",
        "model_0000030.pth",
    ]
    assert (tmp_path / POINTER_FILE).read_text().strip() == "model_0000030.pth"
    ckpt.save(FINAL_CHECKPOINT, _state(40))
    path, state = ckpt.load_latest()
    assert path.name == FINAL_CHECKPOINT and state["iteration"] == 40
    assert state["metadata"] == {"class_names": ["a"]}
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage) -> None:
    ckpt = Checkpointer(tmp_path, max_to_keep=3)
    ckpt.save("model_0000010.pth", _state(10))
    newest = ckpt.save("model_0000020.pth", _state(20))
    data = newest.read_bytes()
    newest.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 50, "empty": b""}[damage]
    )
    with caplog.at_level(logging.WARNING):
        path, state = ckpt.load_latest()
    assert path.name == "model_0000010.pth" and state["iteration"] == 10
    assert "model_0000020.pth" in caplog.text and "Resuming from model_0000010.pth" in caplog.text
    assert newest.is_file()  # the damaged file is kept for inspection, nothing is deleted


def test_a_stale_pointer_and_a_weights_only_file_are_skipped(tmp_path, caplog) -> None:
    ckpt = Checkpointer(tmp_path)
    ckpt.save("model_0000010.pth", _state(10))
    (tmp_path / POINTER_FILE).write_text("../../etc/passwd\n")  # never followed outside the dir
    torch.save({"model": nn.Linear(2, 2).state_dict()}, tmp_path / "model_0000099.pth")
    with caplog.at_level(logging.WARNING):
        path, _ = ckpt.load_latest()
    assert path.name == "model_0000010.pth"
    assert "model_0000099.pth (no optimizer, iteration" in caplog.text


def test_no_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    assert Checkpointer(tmp_path).load_latest() is None


def test_an_unwritable_run_directory_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(
        PermissionError, match=r"run directory .*a_file/run is not writable.*hydra.run.dir"
    ):
        Checkpointer(blocker / "run")


def test_a_failed_save_names_the_file_and_keeps_the_previous(tmp_path, monkeypatch) -> None:
    ckpt = Checkpointer(tmp_path)
    ckpt.save("model_0000010.pth", _state(10))

    def disk_full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lazydet.checkpoint.save_checkpoint", disk_full)
    with pytest.raises(OSError, match=r"model_0000020.pth failed \(No space left.*intact"):
        ckpt.save("model_0000020.pth", _state(20))
    monkeypatch.undo()
    path, state = ckpt.load_latest()
    assert path.name == "model_0000010.pth" and state["iteration"] == 10


def test_resume_false_moves_old_checkpoints_aside(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, run_outputs=("metrics.jsonl", "tensorboard"))
    ckpt.save("model_0000010.pth", _state(10))
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 10}\n')
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.out").write_text("x")
    moved = ckpt.move_aside()
    assert moved is not None and moved.parent == tmp_path
    assert (moved / "model_0000010.pth").is_file() and (moved / POINTER_FILE).is_file()
    assert (moved / "metrics.jsonl").is_file() and (moved / "tensorboard" / "events.out").is_file()
    assert not (tmp_path / "metrics.jsonl").exists()
    assert ckpt.load_latest() is None


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # a cached Gaussian is part of numpy's state
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pth")
    expected = (random.random(), np.random.normal(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    got = (random.random(), np.random.normal(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_nan_stops_without_losing_or_adding_a_checkpoint(tmp_path: Path) -> None:
    class NaNAt5(nn.Linear):
        calls = 0

        def forward(self, batch):
            self.calls += 1
            loss = self.weight.sum() * 0 + 1.0
            return {"loss_a": loss, "loss_b": loss * (float("nan") if self.calls > 5 else 1)}

    model = NaNAt5(2, 2)
    ckpt = Checkpointer(tmp_path, max_to_keep=5)
    trainer = Trainer(
        model=model,
        data_loader=iter(lambda: [None], 0),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        max_iter=10,
        hooks=[CheckpointHook(ckpt, period=2)],
    )
    with pytest.raises(NonFiniteLossError, match="iteration 5 .*loss_b=nan"):
        trainer.train(handle_signals=False)
    assert [p.name for p in ckpt.periodic_checkpoints()] == [
        "model_0000002.pth",
        "model_0000004.pth",
    ]
    assert not (tmp_path / FINAL_CHECKPOINT).exists()
    assert ckpt.load_latest()[1]["iteration"] == 4


def test_two_runs_on_one_directory_the_second_stops_at_once(tmp_path: Path) -> None:
    first = Checkpointer(tmp_path)
    first.lock()
    with pytest.raises(BlockingIOError, match=rf"{tmp_path} is in use .*pid {os.getpid()}"):
        Checkpointer(tmp_path).lock()
    first.unlock()
    second = Checkpointer(tmp_path)
    second.lock()  # free again once the first run released it
    second.unlock()


class _FullDisk:
    """A file whose writes fail after ``room`` bytes, as on a full disk (ENOSPC)."""

    def __init__(self, file, room: int) -> None:
        self._file, self._room = file, room

    def write(self, data) -> int:
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def test_a_full_disk_during_torch_save_gives_the_intact_message(tmp_path, monkeypatch) -> None:
    # torch.save turns the failed write into RuntimeError("... unexpected pos ..."): the real
    # torch.save runs here, on a file that fails like a full disk.
    import shutil

    from lazydet.checkpoint import store

    ckpt = Checkpointer(tmp_path)
    ckpt.save("model_0000010.pth", _state(10))
    real_fdopen = os.fdopen
    monkeypatch.setattr(store.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 300))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(OSError, match=r"model_0000020.pth failed \(No space left.*intact") as info:
        ckpt.save("model_0000020.pth", _state(20))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []
    path, state = ckpt.load_latest()
    assert path.name == "model_0000010.pth" and state["iteration"] == 10


def test_stale_temporaries_of_dead_processes_are_removed_at_the_next_start(tmp_path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    live_pid = os.getppid()  # alive for the whole test
    stale = [
        tmp_path / f".model_0000010.pth.{dead_pid}.0badc0de.tmp",
        tmp_path / f".model_final.pth.{dead_pid}.12ab.tmp",
        tmp_path / f".{POINTER_FILE}.{dead_pid}.tmp",
    ]
    kept = [
        tmp_path / f".model_0000020.pth.{live_pid}.deadbeef.tmp",  # a live process's save
        tmp_path / f"model_0000010.pth.{dead_pid}.0badc0de.tmp",  # not ours (not hidden)
        tmp_path / "notes.tmp",
    ]
    for path in stale + kept:
        path.write_bytes(b"partial")
    ckpt = Checkpointer(tmp_path)
    ckpt.lock()
    try:
        assert [p for p in stale if p.exists()] == []
        assert all(p.read_bytes() == b"partial" for p in kept)
    finally:
        ckpt.unlock()


class _Crash(BaseException):
    """A kill at one step of a save (not an Exception: nothing may catch and carry on)."""


def _save_steps(monkeypatch, crash_at: int | None) -> list[str]:
    """Patch os.fsync / os.replace to record each durable step and crash at step ``crash_at``."""
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def step(name: str) -> None:
        if crash_at is not None and len(steps) == crash_at:
            raise _Crash(name)
        steps.append(name)

    def fsync(fd) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        step(f"fsync {Path(target).name if not os.path.isdir(target) else '<dir>'}")
        real_fsync(fd)

    def replace(src, dst) -> None:
        step(f"replace {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return steps


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_the_pointer_names_only_complete_durable_checkpoints(tmp_path, monkeypatch) -> None:
    ckpt = Checkpointer(tmp_path)
    ckpt.save("model_0000010.pth", _state(10))
    steps = _save_steps(monkeypatch, crash_at=None)
    ckpt.save("model_0000020.pth", _state(20))
    monkeypatch.undo()
    # The checkpoint is fsynced, renamed into place and its directory fsynced before the
    # pointer's own temporary file is written, fsynced and renamed over the pointer.
    order = [s.split(".")[0] if s.startswith("fsync .") else s for s in steps]
    assert order == [
        "fsync ",  # the checkpoint's temporary file (hidden name)
        "replace model_0000020.pth",
        "fsync <dir>",
        "fsync ",  # the pointer's temporary file
        f"replace {POINTER_FILE}",
        "fsync <dir>",
    ], steps
    # A kill at every step leaves a pointer naming a complete checkpoint, and resume works.
    for crash_at in range(len(steps)):
        run = tmp_path / f"crash{crash_at}"
        run.mkdir()
        ckpt = Checkpointer(run)
        ckpt.save("model_0000010.pth", _state(10))
        _save_steps(monkeypatch, crash_at=crash_at)
        with pytest.raises(_Crash):
            ckpt.save("model_0000020.pth", _state(20))
        monkeypatch.undo()
        named = (run / POINTER_FILE).read_text().strip()
        assert torch.load(run / named, weights_only=True)["iteration"] in (10, 20), crash_at
        path, state = Checkpointer(run).load_latest()
        # The pointer decides: the new file counts once the pointer was replaced to name it.
        pointed = crash_at > steps.index(f"replace {POINTER_FILE}")
        assert state["iteration"] == (20 if pointed else 10), (crash_at, path)
