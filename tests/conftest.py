"""Shared test set-up: the fixture config tree and the shared reference data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU, lazydet's Triton kernels can only run in Triton's interpreter. Triton reads the
# variable when a kernel is defined, i.e. when lazydet.kernels is first imported, which may
# happen while any test module is collected: so it is set here, at the root, before collection.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
FIXTURE_CONF = FIXTURES / "conf"
# Reference data shared beside the checkout (absent from a user's clone: tests skip then).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# The fixture configs name small modules in tests/fixtures/toy_modules.py.
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))


@pytest.fixture
def fixture_conf(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make tests/fixtures/conf a config directory (ahead of lazydet's own conf/)."""
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(FIXTURE_CONF))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")])
    )
    return FIXTURE_CONF


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (it sits beside the checkout)")
    return SHARED_DATA
