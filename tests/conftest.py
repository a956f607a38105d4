"""Shared test set-up: the fixture config tree and the shared reference data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Without a GPU, lazydet's Triton kernels can only run in Triton's interpreter. Triton reads the
# variable when it is first imported (torch and torchvision may import it), so it is set here,
# before anything imports torch. The GPU check looks for the NVIDIA driver's device node rather
# than asking torch, for that reason.
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

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
        message = f"reference data folder {SHARED_DATA} is absent (it sits beside the checkout)"
        # CI has the data beside its clone: a missing folder there is a broken set-up, and the
        # tests that compare with the references must not quietly skip.
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture
def interp_conf(fixture_conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user config directory ahead of the fixture tree, holding ``interp``: ``width = 4`` and
    ``net = L(ConvBackbone)(channels="${width}")`` (an interpolation to resolve at build time)."""
    user = tmp_path / "conf"
    user.mkdir()
    (user / "interp.py").write_text(
        "from lazydet.config import L\n"
        "from toy_modules import ConvBackbone\n"
        "width = 4\n"
        'net = L(ConvBackbone)(channels="${width}")\n'
    )
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", f"{user}{os.pathsep}{fixture_conf}")
    return user
