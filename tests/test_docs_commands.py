"""The docs' runnable commands and the notebook walkthrough are executed, so they cannot rot.

A shell block is runnable when the line before its opening fence is a marker:

    <!-- runnable -->          run in the default test suite (keep it to seconds on 2 CPU cores)
    <!-- runnable: slow -->    run with ``-m slow`` (a short training run, for instance)

in README.md, docs/*.md and projects/*/README.md; the block is a ```bash or ```console fence
(``console`` lines start with ``$ ``; other lines are output and are not run). Each block runs
as one bash script (``set -euo pipefail``) from a scratch directory where the checkout's top-level
folders are linked, so relative paths such as ``projects/vitdet/configs`` work and what a
command writes (``outputs/``, ``runs/``) lands in the scratch directory. ``LAZYDET_CACHE`` points
to one folder per test session (the shapes set is generated once per session).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_blocks import REPO_ROOT, DocBlock, extract_shell_blocks

# Limits against a hung command, not speed targets: the 2 CPU cores are shared.
BLOCK_TIMEOUT_S = {"fast": 300, "slow": 1200}


def documentation_files() -> list[Path]:
    return [
        REPO_ROOT / "README.md",
        *sorted((REPO_ROOT / "docs").glob("*.md")),
        *sorted((REPO_ROOT / "projects").glob("*/README.md")),
    ]


def all_blocks() -> list[DocBlock]:
    return [block for path in documentation_files() for block in extract_shell_blocks(path)]


BLOCKS = all_blocks()


def _params(kind: str) -> list:
    marks = [pytest.mark.slow] if kind == "slow" else []
    return [pytest.param(b, id=b.id, marks=marks) for b in BLOCKS if b.kind == kind]


def _scratch(tmp_path: Path) -> Path:
    """A working directory that sees the checkout's folders and files by their usual names."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    skip = {".git", ".venv", "outputs", "multirun", "runs"}
    for entry in REPO_ROOT.iterdir():
        if entry.name not in skip:
            (work / entry.name).symlink_to(entry)
    return work


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LAZYDET_CACHE for the session: the shapes set is generated once, not per block."""
    return tmp_path_factory.mktemp("lazydet_cache")


def run_block(
    block: DocBlock, tmp_path: Path, cache: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["LAZYDET_CACHE"] = str(cache or tmp_path / "cache")
    env.pop("LAZYDET_CONFIG_PATH", None)  # the block sets its own
    # The blocks say `python`: the interpreter running the tests (the project's venv).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    script = "set -euo pipefail\n" + block.code
    return subprocess.run(
        ["bash", "-c", script],
        cwd=_scratch(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S[block.kind],
    )


def _check(block: DocBlock, tmp_path: Path, cache: Path) -> None:
    result = run_block(block, tmp_path, cache)
    assert result.returncode == 0, (
        f"{block.id}: the documented commands exited {result.returncode}\n{block.code}\n"
        f"--- stdout (end)\n{result.stdout[-3000:]}\n--- stderr (end)\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", _params("fast"))
def test_fast_documented_commands_run(block: DocBlock, tmp_path: Path, session_cache: Path) -> None:
    _check(block, tmp_path, session_cache)


@pytest.mark.parametrize("block", _params("slow"))
def test_slow_documented_commands_run(block: DocBlock, tmp_path: Path, session_cache: Path) -> None:
    _check(block, tmp_path, session_cache)


def test_the_docs_have_runnable_commands() -> None:
    # Guards against a marker typo silently turning every check off.
    assert any(b.path.name == "getting_started.md" for b in BLOCKS)
    assert sum(b.kind == "fast" for b in BLOCKS) >= 4
    assert any(b.kind == "slow" for b in BLOCKS)
    for project in ("vitdet", "custom_head"):
        assert any(b.path == REPO_ROOT / "projects" / project / "README.md" for b in BLOCKS)


def test_a_block_runs_as_one_strict_bash_script(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("text\n<!-- runnable -->\n```bash\necho one \\\n  two\n# a comment\n```\n")
    (block,) = extract_shell_blocks(doc)
    result = run_block(block, tmp_path)
    assert result.returncode == 0 and result.stdout == "one two\n"
    # A failing command fails the block (set -e), not only the last line's status.
    failing = DocBlock(doc, 1, "fast", "false\necho after\n")
    assert run_block(failing, tmp_path / "x").returncode != 0


def test_quickstart_notebook_executes(
    tmp_path: Path, session_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/notebooks/quickstart.py, converted by jupytext and run in a Jupyter kernel."""
    jupytext = pytest.importorskip("jupytext", reason="the dev extra installs jupytext")
    nbclient = pytest.importorskip("nbclient", reason="the dev extra installs nbclient")
    pytest.importorskip("ipykernel", reason="the dev extra installs ipykernel")

    monkeypatch.setenv("LAZYDET_CACHE", str(session_cache))  # the kernel inherits it
    monkeypatch.delenv("LAZYDET_CONFIG_PATH", raising=False)
    notebook = jupytext.read(REPO_ROOT / "docs" / "notebooks" / "quickstart.py")
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any exception

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "Did you mean 'lr'?" in text
    assert "one object in two places: True" in text
    assert "reloaded equal: True" in text
    assert "~ model.backbone._target_" not in text  # the quickstart edit is a depth, not a class
    assert "~ _target_: 'lazydet.modeling.backbone.FPN'" in text  # the swapped group option
    # The Predictor's picture is shown inline, as a PNG.
    pictures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pictures) == 1
