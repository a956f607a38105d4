"""Every reader of a weights file refuses a broken one with one error naming the file and the
problem: files damaged the ways real files are (cut short, bytes flipped, empty, a directory, a
text file, a zip that is not a checkpoint, a bare state dict where a checkpoint belongs).

One table for the four readers (``load_checkpoint`` and ``read_metadata`` of lazydet's own
checkpoints, ``read_checkpoint`` and ``load_weights`` of any weights file) over one folder of
broken files.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lazydet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    read_metadata,
    save_checkpoint,
)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A folder of broken files beside ``good.pth``, a lazydet checkpoint that loads."""
    save_checkpoint(tmp_path / "good.pth", {"model": {"w": torch.randn(100, 100)}})
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    assert not zipfile.is_zipfile(tmp_path / "truncated.pth")
    with zipfile.ZipFile(tmp_path / "good.pth") as archive:  # flip bytes of the tensor data
        member = next(m for m in archive.infolist() if m.filename.endswith("data/0"))
    start = data.index(b"data/0", member.header_offset) + len(b"data/0") + 100
    (tmp_path / "damaged.pth").write_bytes(data[:start] + b"\xff" * 8 + data[start + 8 :])
    pickled = pickle.dumps({"model": {"w": np.zeros((100, 100))}}, protocol=4)
    (tmp_path / "truncated.pkl").write_bytes(pickled[: len(pickled) // 2])
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    (tmp_path / "notes.txt").write_text("model weights are elsewhere\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pth")
    with zipfile.ZipFile(tmp_path / "archive.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    (tmp_path / "folder.pth").mkdir()
    assert load_checkpoint(tmp_path / "good.pth")["model"]["w"].shape == (100, 100)
    return tmp_path


def load_weights_into_linear(path: Path) -> object:
    return load_weights(nn.Linear(2, 2), path)


# reader -> (file name, error, what the message says after the file's name)
REFUSALS = {
    load_checkpoint: [
        ("absent.pth", FileNotFoundError, " does not exist"),
        ("folder.pth", IsADirectoryError, " is a directory"),
        ("truncated.pth", CheckpointError, " is truncated or corrupt"),
        ("damaged.pth", CheckpointError, " is truncated or corrupt.*data/0 fails its CRC"),
        ("empty.pth", CheckpointError, " is empty"),
        ("notes.txt", CheckpointError, " is not a checkpoint"),
        ("archive.zip", CheckpointError, r" is not a checkpoint.*data\.pkl"),
        ("bare.pth", CheckpointError, " is not a checkpoint.*load_weights"),
    ],
    read_metadata: [
        ("bare.pth", CheckpointError, " carries no lazydet metadata"),
        ("truncated.pth", CheckpointError, " is truncated or corrupt"),
    ],
    read_checkpoint: [
        ("truncated.pth", ValueError, " is truncated or corrupt"),
        ("truncated.pkl", ValueError, ".*corrupt"),
        ("notes.txt", ValueError, ".*not a checkpoint"),
        ("empty.pth", ValueError, ".*empty"),
        ("list.pkl", ValueError, ".*expected a dict"),
    ],
    load_weights_into_linear: [
        ("absent.pth", FileNotFoundError, ""),
        ("folder.pth", IsADirectoryError, " is a directory"),
    ],
}


@pytest.mark.parametrize(
    ("reader", "name", "error", "message"),
    [(reader, *refusal) for reader, refusals in REFUSALS.items() for refusal in refusals],
)
def test_a_broken_file_is_one_error_naming_it(broken: Path, reader, name, error, message) -> None:
    with pytest.raises(error, match=re.escape(name) + message):
        reader(broken / name)
