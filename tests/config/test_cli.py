"""``python -m lazydet.train``: the commands the README gives, run as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_python
from omegaconf import OmegaConf

from lazydet.config import instantiate, load


def run_train(
    args: list[str], cwd: Path, fixture_conf: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    # fixture_conf already set LAZYDET_CONFIG_PATH and PYTHONPATH in this process's environment.
    return run_python(["-m", "lazydet.train", *args], cwd=cwd, timeout=timeout)


def test_help_lists_experiments_and_groups_without_conf(fixture_conf, tmp_path):
    result = run_train(["--help"], tmp_path, fixture_conf)
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"\n  toy_shared +Two holders of one backbone object through ref\(\)\.\n", result.stdout
    )
    # The fixture directory layers over lazydet's conf/: both contribute options to a group.
    assert re.search(r"model/backbone: .*\bconv\b.*\bmlp\b.*\bresnet50\b", result.stdout)
    assert "mask_rcnn_fpn" in result.stdout


def test_cfg_job_prints_the_composed_config(fixture_conf, tmp_path):
    result = run_train(
        ["conf=toy", "model.backbone=mlp", "optimizer.lr=0.02", "--cfg", "job"],
        tmp_path,
        fixture_conf,
    )
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.model.backbone._target_ == "toy_modules.MLPBackbone"
    assert "channels" not in printed.model.backbone
    assert printed.optimizer.lr == 0.02


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimizer.lr=0.1"], "Choose an experiment with conf=NAME. Experiments: "),
        (["conf=toi"], "No experiment 'toi' (conf=toi). Did you mean 'toy'?"),
        (
            ["conf=toy", "optimizer.lrr=0.1"],
            "optimizer (optimizer=sgd, optimizer/sgd.py) sets no 'lrr'. Did you mean 'lr'?",
        ),
        (
            ["conf=toy", "+optimizer.lrr=0.1"],
            "torch.optim.SGD has no argument 'lrr'. Did you mean 'lr'?",
        ),
        (["conf=toy", "optimizer.dampening=0.1"], "write +optimizer.dampening=... to add"),
        (["conf=toy", "model.backbone=vitt"], "Group 'model/backbone' has no option 'vitt'"),
        (["conf=toy", "optimizer.lr=0.1,0.2"], "add -m (--multirun)"),
        (
            ["-m", "conf=toy", "optimizer.lr=0.1,fast"],
            "argument 'lr' of torch.optim.SGD got 'fast'",
        ),
    ],
)
def test_bad_command_lines_fail_fast_with_one_message(
    fixture_conf, tmp_path, monkeypatch, capsys, args, message
):
    # In-process (the vetting runs before Hydra starts), so each case costs milliseconds.
    from lazydet.train import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert "Traceback" not in stderr and "not in struct" not in stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_run_saves_hydra_files_and_a_runnable_config(fixture_conf, tmp_path):
    result = run_train(
        ["conf=toy", "model.backbone=mlp", "hydra.run.dir=run"], tmp_path, fixture_conf
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        ".hydra/hydra.yaml",
        "config.py",
        "config.yaml",
    ):
        assert (run_dir / name).is_file(), name
    assert "ToyClassifier" in (run_dir / "log.txt").read_text()
    # Both dumps rebuild the same model: Hydra's own YAML and lazydet's runnable Python.
    torch.manual_seed(0)
    from_hydra = instantiate(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))["model"]
    torch.manual_seed(0)
    from_py = instantiate(load(run_dir / "config.py"))["model"]
    assert [(k, v.shape) for k, v in from_hydra.state_dict().items()] == [
        (k, v.shape) for k, v in from_py.state_dict().items()
    ]
    assert all(
        torch.equal(a, b)
        for a, b in zip(from_hydra.state_dict().values(), from_py.state_dict().values())
    )


def _job_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("multirun/*/*/*/config.py"))


def test_multirun_with_the_basic_launcher(fixture_conf, tmp_path):
    result = run_train(["-m", "conf=toy", "optimizer.lr=0.01,0.02"], tmp_path, fixture_conf)
    assert result.returncode == 0, result.stderr
    jobs = _job_dirs(tmp_path)
    assert len(jobs) == 2
    assert sorted(load(j / "config.py").optimizer.lr for j in jobs) == [0.01, 0.02]


def test_two_sweeps_in_the_same_second_get_separate_directories(fixture_conf, tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lazydet.train", "-m", "conf=toy", "optimizer.lr=0.1,0.2"],
            cwd=tmp_path,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    sweep_dirs = {j.parent for j in _job_dirs(tmp_path)}
    assert len(sweep_dirs) == 2
    assert len(_job_dirs(tmp_path)) == 4


def test_multirun_with_submitit_local(fixture_conf, tmp_path):
    result = run_train(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "conf=toy",
            "optimizer.lr=0.01,0.02",
            "model.backbone=mlp",
        ],
        tmp_path,
        fixture_conf,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    jobs = _job_dirs(tmp_path)
    assert len(jobs) == 2
    configs = [load(j / "config.py") for j in jobs]
    assert sorted(c.optimizer.lr for c in configs) == [0.01, 0.02]
    assert all(c.model.backbone._target_ == "toy_modules.MLPBackbone" for c in configs)
    assert list(tmp_path.glob("multirun/*/*/.submitit"))  # the jobs really went through submitit


def test_import_error_in_an_experiment_is_one_message(fixture_conf, tmp_path, monkeypatch, capsys):
    from lazydet.train import main

    user = tmp_path / "conf"
    user.mkdir()
    (user / "broken.py").write_text("import no_such_module_abc\nx = 1\n")
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", f"{user}:{fixture_conf}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["conf=broken"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "Error in config file" in stderr and "broken.py, line 1: ModuleNotFoundError" in stderr
    assert "Traceback" not in stderr


def test_missing_dataset_files_end_the_run_with_one_message(tmp_path, monkeypatch):
    # lazydet's own mask_rcnn_fpn with its default dataset=coco2017, and no COCO files.
    env = {k: v for k, v in os.environ.items() if k != "LAZYDET_CONFIG_PATH"}
    env["LAZYDET_DATASETS"] = str(tmp_path / "datasets")
    command = ["-m", "lazydet.train", "conf=mask_rcnn_fpn", "model.backbone=resnet18"]
    result = run_python(command, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "lazydet.train: Building 'dataloader.train'" in result.stderr
    assert (
        f"{tmp_path / 'datasets'}/coco/annotations/instances_train2017.json does not exist"
        in result.stderr
    )
    assert "LAZYDET_DATASETS" in result.stderr and "Traceback" not in result.stderr


def test_init_checkpoint_loads_weights_into_the_model(fixture_conf, tmp_path):
    from lazydet.config import compose
    from lazydet.engine.run import build

    torch.manual_seed(1)
    source = instantiate(compose("toy"))["model"]
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    torch.manual_seed(2)
    built = build(compose("toy", [f"+train.init_checkpoint={tmp_path / 'weights.pth'}"]))
    loaded = built["model"].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    assert built["init_checkpoint"].complete

    # The CLI reports it, and a file that is not a checkpoint is one message.
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    result = run_train(
        ["conf=toy", f"+train.init_checkpoint={tmp_path / 'bad.pth'}"], tmp_path, fixture_conf
    )
    assert result.returncode == 1
    assert "lazydet.train: train.init_checkpoint:" in result.stderr and "bad.pth" in result.stderr
    good = run_train(
        ["conf=toy", f"+train.init_checkpoint={tmp_path / 'weights.pth'}"], tmp_path, fixture_conf
    )
    assert good.returncode == 0, good.stderr
    logs = "".join(p.read_text() for p in tmp_path.glob("outputs/*/*/log.txt"))
    assert "Loaded 6 of 6 model tensors" in logs
