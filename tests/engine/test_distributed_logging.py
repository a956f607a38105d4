"""Rank-aware logging (lazydet.utils.logging), checked in one process by naming the rank."""

from __future__ import annotations

import logging

import pytest

from lazydet.utils.logging import setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_rank0_prints_once_and_writes_log_txt(tmp_path, capsys, caplog):
    setup_logging(tmp_path, rank=0, world_size=2)
    logger = setup_logging(tmp_path, rank=0, world_size=2)  # again: no second copy
    logger.getChild("engine").info("step 10 done")
    out = capsys.readouterr().out
    assert out.count("step 10 done") == 1
    assert "[rank0]" in out
    assert "step 10 done" in (tmp_path / "log.txt").read_text()
    assert "step 10 done" in caplog.text  # records still propagate to other handlers


def test_other_ranks_keep_the_console_quiet_but_log_to_their_file(tmp_path, capsys):
    logger = setup_logging(tmp_path, rank=3, world_size=4, level=logging.DEBUG)
    logger.info("rank 3 info")
    logger.debug("rank 3 debug")
    logger.error("rank 3 failed")
    captured = capsys.readouterr()
    assert "rank 3 info" not in captured.out + captured.err
    assert "[rank3]" in captured.err and "rank 3 failed" in captured.err  # errors are seen
    text = (tmp_path / "log.rank3.txt").read_text()
    assert "rank 3 info" in text and "rank 3 debug" in text and "rank 3 failed" in text
    assert not (tmp_path / "log.txt").exists()


def test_an_existing_console_handler_is_kept_not_doubled(tmp_path, capsys):
    import sys

    hydra_like = logging.StreamHandler(sys.stdout)
    logging.getLogger().addHandler(hydra_like)
    try:
        setup_logging(tmp_path, rank=0, world_size=1).info("once")
        assert capsys.readouterr().out.count("once") == 1
        setup_logging(tmp_path, rank=1, world_size=2).info("quiet on rank 1")
        assert "quiet on rank 1" not in capsys.readouterr().out  # lowered to errors
    finally:
        logging.getLogger().removeHandler(hydra_like)


def test_one_process_has_no_rank_prefix(tmp_path, capsys):
    setup_logging(tmp_path, rank=0, world_size=1).info("hello")
    assert "[rank" not in capsys.readouterr().out


def test_a_file_where_the_run_directory_should_be(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="is a file"):
        setup_logging(blocker, rank=0, world_size=1)
    assert blocker.read_text() == "not a directory"  # nothing lost
