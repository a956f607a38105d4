"""Hydra's private API is reached through one module, and only on a checked Hydra release."""

from __future__ import annotations

import ast
from pathlib import Path

import hydra
import pytest

from lazydet.config import ConfigError, hydra_private

PACKAGE = Path(__file__).resolve().parents[2] / "lazydet"


def test_only_hydra_private_imports_hydra_internals():
    users = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n.startswith("hydra._internal") for n in names):
                users.append(path.relative_to(PACKAGE).as_posix())
    assert set(users) == {"config/hydra_private.py"}


def test_the_helpers_work_on_the_installed_hydra():
    args = hydra_private.args_parser().parse_args(["-m", "conf=toy", "optimizer.lr=0.1,0.2"])
    assert args.multirun and args.overrides == ["conf=toy", "optimizer.lr=0.1,0.2"]
    assert hasattr(hydra_private.config_loader(), "load_configuration")


def test_an_unchecked_hydra_release_is_refused(monkeypatch):
    monkeypatch.setattr(hydra, "__version__", "1.4.0")
    with pytest.raises(ConfigError, match=r"hydra-core 1\.4\.0 .*1\.3\.x"):
        hydra_private.args_parser()
