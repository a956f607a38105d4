"""The wheel carries conf/ and kernels/ as lazydet.conf and lazydet.kernels and works alone."""

from __future__ import annotations

import json
import os
import textwrap
import zipfile
from pathlib import Path

import pytest
import tomllib
from helpers import run_python

REPO = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "lazydet").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    # Every config group folder ships too (as lazydet.conf.<group>).
    found |= {
        ".".join(("lazydet", "conf", *d.relative_to(REPO / "conf").parts))
        for d in (REPO / "conf").rglob("*")
        if d.is_dir() and "__pycache__" not in d.parts and any(d.glob("*.py"))
    }
    assert found - listed == set(), "add these packages to [tool.setuptools] packages"


def _pip(*args: str) -> None:
    """``python -m pip *args -q`` with the interpreter running the tests; pip's own message is
    the failure's."""
    done = run_python(["-m", "pip", *args, "-q"])
    assert done.returncode == 0, done.stderr


def test_wheel_installs_and_composes_outside_the_checkout(tmp_path, monkeypatch):
    dist = tmp_path / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO))
    (wheel,) = dist.glob("lazydet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lazydet/conf/optimizer/sgd.py" in names
    assert "lazydet/conf/schedule/_steps.py" in names
    assert "lazydet/kernels/__init__.py" in names
    assert not any(n.startswith(("conf/", "kernels/", "tests/")) for n in names)

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(site), str(wheel))
    user_conf = tmp_path / "user_conf"
    user_conf.mkdir()
    (user_conf / "tiny.py").write_text(
        textwrap.dedent('''
        """A tiny experiment on lazydet's own optimizer and schedule groups."""
        import torch
        from lazydet.config import L
        defaults = {"optimizer": "sgd", "schedule": "1x"}
        model = L(torch.nn.Linear)(in_features=4, out_features=2)
    ''')
    )
    script = textwrap.dedent("""
        import json, lazydet, lazydet.conf, lazydet.kernels
        from lazydet.config import compose, instantiate
        cfg = compose("tiny", ["optimizer.lr=0.01"])
        built = instantiate(cfg)
        print(json.dumps({
            "lazydet": lazydet.__file__, "conf": lazydet.conf.__file__,
            "lr": built["optimizer"].param_groups[0]["lr"],
            "scheduler": type(built["schedule"]["lr_scheduler"]).__name__,
        }))
    """)
    env = dict(os.environ, PYTHONPATH=str(site), LAZYDET_CONFIG_PATH=str(user_conf))
    # Run from an empty folder so that the checkout cannot be imported by accident.
    result = run_python(["-c", script], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["lazydet"].startswith(str(site)) and report["conf"].startswith(str(site))
    assert report["lr"] == pytest.approx(0.01 * 0.001)  # warm-up starts at lr * start_factor
    assert report["scheduler"] == "SequentialLR"
