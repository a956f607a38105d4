"""The docs tests' reader of Markdown blocks (tests/markdown_blocks.py): what it reads from a
page, and one error naming the file and line for each malformed marker or fence."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_blocks import MarkerError, extract_python_blocks, extract_shell_blocks

# A page for each reader: marked and unmarked blocks, both marker kinds, a blank line or a fence
# of another language between blocks.
SHELL_PAGE = (
    "text\n<!-- runnable -->\n```bash\necho one \\\n  two\n# a comment\n```\n"
    "```bash\necho not marked\n```\n"
    "<!--runnable: slow-->\n```console\n$ echo three\nthree\n```\n"
)
PYTHON_PAGE = (
    "text\n```python\nx = 1\n```\n"
    "<!-- python: not-run (needs COCO's val json) -->\n```python\nload('x')\n```\n"
    "```bash\nls\n```\n<!-- python: slow -->\n\n```python\ntrain()\n```\n"
)


@pytest.mark.parametrize(
    ("extract", "page", "expected"),
    [
        (
            extract_shell_blocks,
            SHELL_PAGE,
            [(2, "fast", "echo one \\\n  two\n# a comment\n"), (11, "slow", "echo three\n")],
        ),
        (
            extract_python_blocks,
            PYTHON_PAGE,
            [(2, "run", "x = 1\n"), (6, "not-run", "load('x')\n"), (14, "slow", "train()\n")],
        ),
    ],
)
def test_a_page_gives_its_blocks_with_line_kind_and_code(
    tmp_path: Path, extract, page: str, expected: list
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(page)
    assert [(b.line, b.kind, b.code) for b in extract(doc)] == expected


@pytest.mark.parametrize(
    ("extract", "text", "message"),
    [
        (extract_shell_blocks, "<!-- runnable -->\nplain text\n", "must be followed"),
        (extract_shell_blocks, "<!-- runnable -->\n```python\nx = 1\n```\n", "must be followed"),
        (
            extract_shell_blocks,
            "<!-- runnable: sometimes -->\n```bash\nls\n```\n",
            "unknown marker",
        ),
        (extract_shell_blocks, "<!-- runnable -->\n```bash\nls\n", "no closing"),
        (extract_shell_blocks, "<!-- runnable -->\n```bash\n# only a comment\n```\n", "no command"),
        (extract_python_blocks, "<!-- python: not-run -->\n```python\nx = 1\n```\n", "says why"),
        (extract_python_blocks, "<!-- python: not-run () -->\n```python\nx = 1\n```\n", "says why"),
        (
            extract_python_blocks,
            "<!-- python: sometimes -->\n```python\nx = 1\n```\n",
            "unknown marker",
        ),
        (
            extract_python_blocks,
            "<!-- python: slow -->\n```bash\nls\n```\n",
            "not followed by ```python",
        ),
        (extract_python_blocks, "<!-- python: slow -->\nsome text\n", "not followed by ```python"),
        (extract_python_blocks, "```python\nx = 1\n", "no closing"),
    ],
)
def test_a_malformed_block_is_one_error_naming_its_line(
    tmp_path: Path, extract, text: str, message: str
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(MarkerError, match=message) as info:
        extract(doc)
    assert f"{doc}:1" in str(info.value)
