"""``python -m lazydet.train``: sweeps that survive failing jobs, and command lines that used to
end in a Hydra traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import run_python

from lazydet.config import ConfigError, compose, load


def run_train(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    # fixture_conf set LAZYDET_CONFIG_PATH and PYTHONPATH in this process's environment.
    return run_python(["-m", "lazydet.train", *args], cwd=cwd, timeout=timeout)


def _jobs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("multirun/*/*/*/config.py"))


def test_a_failing_job_does_not_end_the_sweep(fixture_conf, tmp_path):
    # Job #0 cannot be built (a negative class count); job #1 must still run.
    result = run_train(["-m", "conf=toy", "model.num_classes=-1,3", "optimizer.lr=0.5"], tmp_path)
    assert result.returncode == 1, result.stderr
    assert len(_jobs(tmp_path)) == 2  # both jobs ran and saved their config
    assert "job #0 (conf=toy model.num_classes=-1 optimizer.lr=0.5) failed: Building 'model'" in (
        result.stderr
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lazydet.train: 2 jobs: 1 ok, 1 failed (#0 model.num_classes=-1: ")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_failing_job_through_submitit_local_is_reported_without_a_traceback(
    fixture_conf, tmp_path
):
    result = run_train(
        ["-m", "hydra/launcher=submitit_local", "conf=toy", "model.num_classes=3,-1"],
        tmp_path,
        timeout=400,
    )
    assert result.returncode == 1, result.stderr
    assert "2 jobs: 1 ok, 1 failed (#1 model.num_classes=-1: " in result.stderr
    assert "Traceback" not in result.stderr and "UncompletedJobError" not in result.stderr


def test_sweeping_experiments_together_with_group_and_value_overrides(fixture_conf, tmp_path):
    result = run_train(
        ["-m", "conf=toy,toy_derived", "model.backbone=mlp", "optimizer.lr=0.3"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    configs = [load(j / "config.py") for j in _jobs(tmp_path)]
    assert sorted(c.model.num_classes for c in configs) == [3, 7]
    assert all(c.model.backbone._target_ == "toy_modules.MLPBackbone" for c in configs)
    assert "2 jobs: 2 ok, 0 failed" in result.stdout


def test_a_saved_config_reruns_with_value_overrides(fixture_conf, tmp_path):
    first = run_train(["conf=toy", "model.backbone=mlp", "hydra.run.dir=first"], tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_train(["conf=first/config.py", "optimizer.lr=0.5", "hydra.run.dir=again"], tmp_path)
    assert again.returncode == 0, again.stderr
    rerun = load(tmp_path / "again" / "config.py")
    original = load(tmp_path / "first" / "config.py")
    assert rerun.optimizer.lr == 0.5
    rerun.optimizer.lr = original.optimizer.lr
    assert rerun == original


def _main_fails(args: list[str], capsys) -> str:
    from lazydet.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err  # one line
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["conf=toy", "optimizer.lr=interval(0.1,0.2)"], "add -m"),
        (["-m", "conf=toy", "optimizer.lr=interval(0.1,0.2)"], "interval(...) is a search range"),
        (["-m", "conf=toy", "optimizer.lr=glob(*)"], "glob(...) chooses among the options"),
        (["-m", "conf=toy", "optimizer=glob(z*)"], "matches no option of 'optimizer'"),
        (["conf=faster_rcnn_fpn", "dataset=null"], "dataset=null removes 'dataset', but "),
        (["conf=toy", "hydra.run.dir=a_file/run"], "a_file is a file, not a directory"),
        (["conf=toy", "hydra.run.dir=/proc/lazydet_run"], "cannot create the run directory"),
        (["-m", "conf=toy", "--cfg", "hydra"], "use --cfg job to see each job's config"),
        (["conf=nowhere/exp.py"], "nowhere/exp.py is not a file"),
    ],
)
def test_command_lines_hydra_would_end_in_a_traceback(
    fixture_conf, tmp_path, monkeypatch, capsys, args, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(fixture_conf))  # restored after the test
    (tmp_path / "a_file").write_text("")
    assert message in _main_fails(args, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


def test_a_missing_config_directory_is_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(tmp_path / "nope"))
    assert "LAZYDET_CONFIG_PATH names" in _main_fails(["conf=toy"], capsys)


def test_group_override_on_a_saved_config_says_why_not(fixture_conf, tmp_path, monkeypatch, capsys):
    from lazydet.config import save

    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(fixture_conf))
    monkeypatch.chdir(tmp_path)
    save(compose("toy"), tmp_path / "config.py")
    err = _main_fails(["conf=config.py", "model.backbone=mlp"], capsys)
    assert "does not choose an option of the group 'model/backbone'" in err


def test_multirun_cfg_job_shows_each_jobs_config(fixture_conf, tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from lazydet.train import main

    monkeypatch.chdir(tmp_path)
    main(["-m", "conf=toy", "model.backbone=glob(m*)", "optimizer.lr=range(1,3)", "--cfg", "job"])
    out = capsys.readouterr().out
    parts = out.split("# job #")[1:]
    assert [p.splitlines()[0] for p in parts] == [
        "0: conf=toy model/backbone=mlp optimizer.lr=1",
        "1: conf=toy model/backbone=mlp optimizer.lr=2",
    ]
    assert OmegaConf.create(parts[1].split("\n", 1)[1]).optimizer.lr == 2
    assert not list(tmp_path.iterdir())


def test_force_add_null_and_list_index_overrides(fixture_conf):
    cfg = compose(
        "faster_rcnn_fpn", ["++dataset=shapes", "model.proposal_generator.in_features.0=p3"]
    )
    assert cfg.dataset.train == "shapes_train"
    assert cfg.model.proposal_generator.in_features[:2] == ["p3", "p3"]
    cfg = compose("toy", ["++optimizer=adamw", "++optimizer.lr=0.3"])
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == 0.3
    cfg = compose("toy", ["++optimizer.lr=0.3", "++optimizer.nesterov=true"])
    assert cfg.optimizer.lr == 0.3 and cfg.optimizer.nesterov is True
    with pytest.raises(ConfigError, match=r"expected str, got int|item 0 \(3\): expected str"):
        compose("faster_rcnn_fpn", ["model.proposal_generator.in_features.0=3"])
    assert "optimizer" not in compose("toy", ["optimizer=null"], check=False)


def test_a_typo_in_a_literal_option_is_reported_before_torch_is_imported(tmp_path):
    # lazydet's own conf/ (optimizer/sgd.py is one literal node): no config file runs.
    env = {k: v for k, v in os.environ.items() if k != "LAZYDET_CONFIG_PATH"}
    code = (
        "import sys\nfrom lazydet.train import main\n"
        "try:\n    main(['conf=mask_rcnn_fpn', 'optimizer.lrr=0.1'])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n"
    )
    result = run_python(["-c", code], cwd=tmp_path, env=env, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "sets no 'lrr'. Did you mean 'lr'?" in result.stderr
