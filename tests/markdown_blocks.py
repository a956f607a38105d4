"""The blocks the docs tests run, read from Markdown pages: the marked shell blocks
(tests/test_docs_commands.py runs them; the marker syntax is in its docstring) and the ```python
blocks (tests/test_docs_python.py). One reader of fences and markers behind both; its own tests
are tests/test_markdown_blocks.py. Importable as ``markdown_blocks`` (tests/ is on ``sys.path``,
as for ``helpers``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_-]*)\s*$")
SHELL_MARKER = re.compile(r"^<!--\s*runnable(?::\s*(?P<kind>[a-z]+))?\s*-->\s*$")
SHELL_KINDS = {None: "fast", "slow": "slow"}
SHELL_LANGS = ("bash", "sh", "console")
PYTHON_MARKER = re.compile(
    r"^<!--\s*python:\s*(?P<kind>[a-z-]+)\s*(?:\((?P<reason>[^)]*)\))?\s*-->$"
)
PYTHON_KINDS = ("not-run", "slow")


class MarkerError(ValueError):
    """A marker or a fence the docs tests cannot read; the message names the file and line."""


@dataclass(frozen=True)
class DocBlock:
    """A block a docs test runs: its page, its 1-based line (the page's own numbering), its kind
    (what the test does with it) and its code."""

    path: Path
    line: int
    kind: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


@dataclass(frozen=True)
class Fenced:
    """A fenced block (``lang`` as written after the opening ```, ``""`` when none), or a marker
    that no fence follows (``lang`` None, ``body`` empty)."""

    lang: str | None
    line: int  # 1-based line of the opening fence; of the marker when lang is None
    body: tuple[str, ...]  # the lines between the fences, as written
    marker: re.Match[str] | None  # the marker before the fence (blank lines between allowed)
    marker_line: int | None  # 1-based


def read_fenced(path: Path, marker: re.Pattern[str]) -> list[Fenced]:
    """Every fenced block of the Markdown file ``path``, in order, each with the ``marker`` match
    standing before it; a marker followed by text (or by nothing) comes back as a ``Fenced`` with
    ``lang`` None, for the caller to refuse in its own words. Lines are matched stripped (a
    fence may be indented in a list); a marker inside a fence is code, not a marker.

    Raises:
        MarkerError: a fence without its closing ```, naming ``path`` and the marker's line (the
            fence's when unmarked).
    """
    lines = path.read_text().splitlines()
    found: list[Fenced] = []
    pending: tuple[int, re.Match[str]] | None = None  # (line, match) of a marker
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        fence = FENCE.match(text)
        if fence is None:
            match = marker.match(text)
            if pending is not None and (match or text):
                found.append(Fenced(None, pending[0], (), pending[1], pending[0]))
                pending = None
            if match:
                pending = (i + 1, match)
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not FENCE.match(lines[end].strip()):
            end += 1
        if end == len(lines):
            where = pending[0] if pending else i + 1
            raise MarkerError(f"{path}:{where}: the block has no closing ```.")
        line, match = pending or (None, None)
        found.append(Fenced(fence.group("lang"), i + 1, tuple(lines[i + 1 : end]), match, line))
        pending = None
        i = end + 1
    if pending is not None:
        found.append(Fenced(None, pending[0], (), pending[1], pending[0]))
    return found


def extract_shell_blocks(path: Path) -> list[DocBlock]:
    """The runnable blocks of one Markdown file (``line``: the marker's); a marker not followed
    on the next line by a shell fence, an unknown marker kind or an unclosed fence is a
    ``MarkerError`` naming the file and line."""
    blocks: list[DocBlock] = []
    for fenced in read_fenced(path, SHELL_MARKER):
        if fenced.marker is None:
            continue
        where = f"{path}:{fenced.marker_line}"
        kind = fenced.marker.group("kind")
        if kind not in SHELL_KINDS:
            raise MarkerError(
                f"{where}: unknown marker 'runnable: {kind}'; use <!-- runnable --> or "
                "<!-- runnable: slow -->."
            )
        if fenced.lang not in SHELL_LANGS or fenced.line != fenced.marker_line + 1:
            raise MarkerError(
                f"{where}: a runnable marker must be followed on the next line by a ```bash or "
                "```console fence."
            )
        body = list(fenced.body)
        if fenced.lang == "console":
            body = [line[2:] for line in body if line.startswith("$ ")]
        if not any(line.strip() and not line.lstrip().startswith("#") for line in body):
            raise MarkerError(f"{where}: the runnable block has no command.")
        blocks.append(DocBlock(path, fenced.marker_line, SHELL_KINDS[kind], "\n".join(body) + "\n"))
    return blocks


def extract_python_blocks(path: Path) -> list[DocBlock]:
    """The ```python blocks of one Markdown file (``line``: the opening fence's; ``kind``:
    "run", "slow" or "not-run"); a marker that is not followed by a ```python fence, of an
    unknown kind, or a not-run without its reason is a ``MarkerError`` naming the file and
    line."""
    blocks: list[DocBlock] = []
    for fenced in read_fenced(path, PYTHON_MARKER):
        kind = "run"
        if fenced.marker is not None:
            where = f"{path}:{fenced.marker_line}"
            kind, reason = fenced.marker.group("kind", "reason")
            reason = (reason or "").strip()
            if kind not in PYTHON_KINDS:
                raise MarkerError(f"{where}: unknown marker 'python: {kind}'; use {PYTHON_KINDS}.")
            if kind == "not-run" and not reason:
                raise MarkerError(
                    f"{where}: a not-run block says why: <!-- python: not-run (reason) -->."
                )
            if fenced.lang != "python":
                raise MarkerError(f"{where}: the marker is not followed by ```python.")
        if fenced.lang == "python":
            blocks.append(DocBlock(path, fenced.line, kind, "\n".join(fenced.body) + "\n"))
    return blocks
