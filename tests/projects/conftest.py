"""Shared set-up of the projects' tests: each project's config directory on the search path, a
small shapes split, and tiny training sizes (2 shared CPU cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECTS = REPO_ROOT / "projects"


@pytest.fixture
def tiny_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Register 6 training and 3 test shapes images (generated under ``tmp_path``)."""
    from lazydet.data.datasets.shapes import register_shapes

    monkeypatch.setenv("LAZYDET_CACHE", str(tmp_path / "cache"))
    train = register_shapes(f"projects_shapes_train_{tmp_path.name}", num_images=6, seed=1)
    test = register_shapes(f"projects_shapes_test_{tmp_path.name}", num_images=3, seed=2)
    return train, test


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch):
    """``project("vitdet")``: put the project's configs on ``LAZYDET_CONFIG_PATH`` and its
    folder on ``sys.path`` (where its README puts them with PYTHONPATH)."""

    def use(name: str) -> Path:
        root = PROJECTS / name
        monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(root / "configs"))
        monkeypatch.syspath_prepend(str(root))
        return root

    return use


@pytest.fixture
def tiny_overrides(tiny_shapes: tuple[str, str]) -> list[str]:
    """Overrides that make any shapes experiment train 2 steps of 2 images in seconds."""
    train, test = tiny_shapes
    return [
        "dataset=shapes",
        f"dataset.train={train}",
        f"dataset.test={test}",
        "dataset.num_workers=0",
        "dataloader.train.total_batch_size=2",
        "dataloader.test.num_workers=0",
        "schedule.max_iter=2",
        "train.log_period=1",
        "train.checkpoint_period=100",
        "train.device=cpu",
        "train.num_processes=1",
    ]
