"""The shared command ``main()``: one line on stderr and an exit code per kind of error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lazydet.config import ConfigError
from lazydet.config.command_line import UsageError, command_main


def _exit_code(run, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        command_main("lazydet.tool", "doc", run, ["a=1"])
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("input=IMAGE_OR_DIR is required"), 2),
        (ConfigError("no config 'nope'"), 2),
        (FileNotFoundError("model.pth does not exist"), 1),
        (ValueError("Detection 7 has bbox [1, nan]"), 1),
    ],
)
def test_known_errors_print_one_line_and_exit_with_their_code(error, code, capsys):
    def run(argv):
        raise error

    assert _exit_code(run, capsys) == (code, f"lazydet.tool: {error}\n")


def test_return_value_is_the_exit_code_and_help_prints_the_doc(capsys):
    assert _exit_code(lambda argv: 3, capsys)[0] == 3
    assert _exit_code(lambda argv: {"bbox": {}}, capsys)[0] == 0  # a result, not a code
    command_main("lazydet.tool", "the doc", lambda argv: pytest.fail("ran"), ["--help"])
    assert capsys.readouterr().out == "the doc\n"


def test_a_bug_keeps_its_traceback():
    def run(argv):
        raise KeyError("internal")

    with pytest.raises(KeyError, match="internal"):
        command_main("lazydet.tool", "doc", run, [])


def test_predict_command_line_mistake_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lazydet.predict", f"input={tmp_path}/nope.png"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("lazydet.predict: ") and "Traceback" not in done.stderr
