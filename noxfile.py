"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s slow``, ``nox -s bench``.

PyTorch is installed first on its own so that the build matching the machine is used; set
``LAZYDET_TORCH_SPEC`` to choose it (default: what pip resolves for ``torch torchvision``).
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session) -> None:
    session.install(*os.environ.get("LAZYDET_TORCH_SPEC", "torch torchvision").split())
    session.install("-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (what CI runs), in parallel on the machine's cores."""
    _install(session)
    session.run("python", "-m", "pytest", "-n", "auto", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """The tests marked ``slow``, which the default run skips (Inductor compilation of a backbone,
    full-size models on real photos, multi-second waits)."""
    _install(session)
    session.run("python", "-m", "pytest", "-n", "auto", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark scripts (GPU ones print that they need CUDA and exit 0 elsewhere)."""
    _install(session)
    session.run("python", "scripts/bench_config.py")
    session.run("python", "scripts/bench_ops.py")
