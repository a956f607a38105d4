"""The ```python blocks of README.md and docs/*.md run as written, so they cannot rot.

Each page's blocks run in order in one namespace (a later block may use what an earlier one
made, as a reader would), from a scratch directory (``LAZYDET_CACHE`` in it too). A block that
only illustrates says so on the line before its fence, with the reason:

    <!-- python: not-run (a config file excerpt: `...` stands for the arguments) -->

and a block that trains (more than a few seconds) is marked ``<!-- python: slow -->``: the page
then runs with ``-m slow`` only. An interactive session (``>>>`` lines) is a ```pycon block, not
a ```python one. docs/notebooks has its own test (tests/test_docs_commands.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_blocks import REPO_ROOT, extract_python_blocks


def documentation_pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


PAGES = {page: extract_python_blocks(page) for page in documentation_pages()}


def _params(slow: bool) -> list:
    out = []
    for page, blocks in PAGES.items():
        runnable = [b for b in blocks if b.kind != "not-run"]
        if runnable and any(b.kind == "slow" for b in blocks) == slow:
            marks = [pytest.mark.slow] if slow else []
            out.append(pytest.param(page, id=str(page.relative_to(REPO_ROOT)), marks=marks))
    return out


def run_page(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute the page's runnable blocks in order in one namespace, from a scratch directory;
    a failing block fails with its file and line in the traceback."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("LAZYDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LAZYDET_CONFIG_PATH", raising=False)
    namespace: dict = {"__name__": "__docs__"}
    for block in PAGES[page]:
        if block.kind == "not-run":
            continue
        # Blank lines up to the fence keep the traceback's line numbers those of the page.
        code = compile("\n" * block.line + block.code, str(block.path), "exec")
        exec(code, namespace)
    return namespace


@pytest.mark.parametrize("page", _params(slow=False))
def test_documented_python_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_page(page, tmp_path, monkeypatch)


@pytest.mark.parametrize("page", _params(slow=True))
def test_slow_documented_python_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_page(page, tmp_path, monkeypatch)


def test_the_docs_python_blocks_run_unless_marked_with_a_reason():
    blocks = [b for page_blocks in PAGES.values() for b in page_blocks]
    runnable = [b for b in blocks if b.kind == "run"]
    not_run = [b for b in blocks if b.kind == "not-run"]
    # A marker typo must not turn the check off: most blocks run, the illustrations are few.
    assert len(runnable) >= 8 and len(not_run) <= len(runnable)
    assert all(not b.code.lstrip().startswith(">>>") for b in blocks), "use ```pycon"


def test_a_failing_block_names_its_page_and_line(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n```python\nx = 1\n```\n\n```python\ny = x + 1\nundefined_name\n```\n"
    )
    PAGES[doc] = extract_python_blocks(doc)
    try:
        with pytest.raises(NameError) as info:
            run_page(doc, tmp_path, monkeypatch)
    finally:
        del PAGES[doc]
    last = info.traceback[-1]
    assert (Path(str(last.path)), last.lineno + 1) == (doc, 9)  # the page's own line
