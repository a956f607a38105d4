import pytest

from lazydet.analyze import main


def test_unknown_subcommand_and_argument_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plot"])
    assert e.value.code == 2 and "Give a subcommand first" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["curves", "run=x"])
    assert e.value.code == 2 and "unknown argument 'run=x'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["curves", "runs=does/not/exist"])
    assert e.value.code == 1 and "does not exist" in capsys.readouterr().err
