"""The commands' own ``key=value`` numbers and flags: one reader (lazydet.config.command_line),
one message naming ``key=value`` and what to give, exit 2 before anything runs."""

from __future__ import annotations

import pytest

from lazydet.config.command_line import UsageError, own_flag, own_number


def test_own_number_reads_and_bounds_a_value() -> None:
    own = {"count": "7", "threshold": "0.25"}
    assert own_number(own, "count", int, 3, low=1) == 7
    assert own_number(own, "threshold", float, 0.5, low=0.0, high=1.0) == 0.25
    assert own_number(own, "absent", int, 3) == 3


@pytest.mark.parametrize(
    ("value", "kind", "bounds", "message"),
    [
        ("abc", int, {}, "count='abc' is not an integer."),
        ("1.5", int, {}, "count='1.5' is not an integer."),
        ("x", float, {}, "count='x' is not a number."),
        ("nan", float, {}, "count='nan': give a number finite."),
        ("inf", float, {"low": 0.0}, "count='inf': give a number at least 0."),
        ("0", int, {"low": 1}, "count='0': give an integer at least 1."),
        ("-2", int, {"low": 1}, "count='-2': give an integer at least 1."),
        ("1.5", float, {"low": 0.0, "high": 1.0}, "count='1.5': give a number between 0 and 1."),
    ],
)
def test_own_number_refuses_with_the_key_and_what_to_give(value, kind, bounds, message) -> None:
    with pytest.raises(UsageError) as refused:
        own_number({"count": value}, "count", kind, 1, **bounds)
    assert str(refused.value) == message


def test_own_flag_words() -> None:
    for word in ("true", "TRUE", "1", "on", "yes"):
        assert own_flag({"f": word}, "f", False) is True
    for word in ("false", "0", "Off", "no"):
        assert own_flag({"f": word}, "f", True) is False
    assert own_flag({}, "f", True) is True
    with pytest.raises(UsageError, match=r"f='maybe' is not true or false\."):
        own_flag({"f": "maybe"}, "f", True)


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("analyze", ["cost", "height=-5"], "height='-5': give an integer at least 1."),
        ("analyze", ["speed", "runs=0"], "runs='0': give an integer at least 1."),
        ("analyze", ["speed", "data_loading=sometimes"], "not true or false"),
        ("export", ["format=onnx", "output=out", "width=wide"], "width='wide' is not an integer."),
        ("export", ["format=onnx", "output=out", "dynamic=maybe"], "not true or false"),
        ("predict", ["output=out", "input=x.jpg", "batch_size=0"], "batch_size='0'"),
    ],
)
def test_each_command_refuses_a_bad_number_with_exit_2(
    tmp_path, monkeypatch, capsys, command, argv, message
) -> None:
    import importlib

    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"lazydet.{command}").main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
