"""The run path's single pieces: one model builder with weights, one device choice, linear
scaling by named scheduler arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, SequentialLR

from lazydet.checkpoint.build import build_model
from lazydet.config import ConfigError, L, ref
from lazydet.engine.run import apply_linear_scaling
from lazydet.utils.comm import select_device


class ScaledByHand(torch.optim.lr_scheduler.LRScheduler):
    """A scheduler linear scaling cannot know: its ``T_max`` might count anything."""

    def __init__(self, optimizer, T_max: int = 10):
        self.T_max = T_max
        super().__init__(optimizer)

    def get_lr(self):
        return list(self.base_lrs)


def _cfg(lr_scheduler):
    return {
        "optimizer": {"lr": 0.02},
        "dataloader": {"train": {"total_batch_size": 16}},
        "schedule": {"max_iter": 1000, "lr_scheduler": lr_scheduler},
    }


def test_linear_scaling_rescales_the_named_arguments_of_known_schedulers():
    warmup = L(LinearLR)(optimizer=ref("optimizer"), total_iters=100)
    steps = L(MultiStepLR)(optimizer=ref("optimizer"), milestones=[600, 800])
    cosine = L(CosineAnnealingLR)(optimizer=ref("optimizer"), T_max=400)
    cfg = _cfg(
        L(SequentialLR)(
            optimizer=ref("optimizer"), schedulers=[warmup, steps, cosine], milestones=[100, 900]
        )
    )
    apply_linear_scaling(cfg, reference_world_size=2, world_size=4)
    assert cfg["optimizer"]["lr"] == pytest.approx(0.04)
    assert cfg["schedule"]["max_iter"] == 500
    sched = cfg["schedule"]["lr_scheduler"]
    assert list(sched.milestones) == [50, 450]
    assert sched.schedulers[0].total_iters == 50
    assert list(sched.schedulers[1].milestones) == [300, 400]
    assert sched.schedulers[2].T_max == 200


def test_linear_scaling_refuses_a_scheduler_it_does_not_know():
    # The old rule rewrote any key named T_max / milestones, whatever the class meant by it.
    cfg = _cfg(L(ScaledByHand)(optimizer=ref("optimizer"), T_max=10))
    with pytest.raises(ConfigError, match=r"schedule\.lr_scheduler: .*ScaledByHand"):
        apply_linear_scaling(cfg, reference_world_size=1, world_size=2)


def test_build_model_loads_the_weights_and_returns_the_report(tmp_path):
    reference = nn.Linear(3, 2)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    cfg = {"model": L(nn.Linear)(in_features=3, out_features=2)}
    model, report = build_model(cfg, weights=tmp_path / "w.pth")
    assert torch.equal(model.weight, reference.weight) and report is not None
    cfg["train"] = {"init_checkpoint": str(tmp_path / "w.pth")}
    model, report = build_model(cfg)  # the config's train.init_checkpoint by default
    assert torch.equal(model.bias, reference.bias) and report is not None
    _, report = build_model({"model": cfg["model"]})
    assert report is None
    with pytest.raises(ConfigError, match=r"train\.init_checkpoint: .*nope\.pth"):
        build_model({**cfg, "train": {"init_checkpoint": str(tmp_path / "nope.pth")}})
    with pytest.raises(ConfigError, match="no 'model'"):
        build_model({"train": {}})


def test_one_device_choice():
    assert select_device("cpu") == torch.device("cpu")
    expected = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    assert select_device(None) == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'"):
            select_device("cuda", key="device")


def test_eval_period_without_an_evaluator_is_a_config_error():
    """``train.eval_period > 0`` with no evaluator would never evaluate: refused, naming both."""
    from lazydet.config import ConfigError, compose
    from lazydet.engine.evaluation_setup import check_evaluation_setup

    cfg = compose("faster_rcnn_fpn", ["dataset=shapes"])
    check_evaluation_setup(cfg)  # eval_period=5000 with its COCOEvaluator: fine
    cfg.pop("evaluator")
    with pytest.raises(ConfigError, match=r"train\.eval_period=5000 .* no evaluator"):
        check_evaluation_setup(cfg)
    cfg.train.eval_period = 0
    check_evaluation_setup(cfg)  # evaluate at the end only: nothing to refuse


def test_channels_last_trains_the_same_weights_in_channels_last_memory(monkeypatch, tmp_path):
    """``train.channels_last=true``: the checkpointed conv weights are channels-last and equal
    (to float rounding) those of the same run in the default layout."""
    from tiny_train import CONF_DIR

    from lazydet.config import compose
    from lazydet.data.datasets import generate_shapes
    from lazydet.train import run

    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(CONF_DIR))
    monkeypatch.chdir(tmp_path)
    generate_shapes(tmp_path / "shapes", num_images=4, image_size=32, seed=3)
    weights = {}
    for channels_last in (False, True):
        cfg = compose(
            "tiny",
            [
                f"dataloader.train.dataset.json_file={tmp_path / 'shapes' / 'annotations.json'}",
                f"dataloader.train.dataset.image_root={tmp_path / 'shapes'}",
                "schedule.max_iter=3",
                "+model.dropout=0.0",
                f"train.channels_last={str(channels_last).lower()}",
            ],
        )
        out = tmp_path / f"run_{channels_last}"
        run(cfg, out)
        weights[channels_last] = torch.load(out / "model_final.pth", weights_only=True)["model"]
    conv = weights[True]["conv.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert weights[False]["conv.weight"].is_contiguous()
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name], value, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="channels_last"):
        compose("tiny", ["train.channels_last=maybe"])


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads Linux's /proc/cpuinfo")
def test_cpu_computes_bf16_agrees_with_the_kernels_cpu_flags():
    from lazydet.utils.comm import cpu_computes_bf16

    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert cpu_computes_bf16() == bool({"avx512_bf16", "amx_tile", "amx_bf16"} & flags)


def test_the_quick_start_takes_bf16_only_where_the_cpu_computes_it(monkeypatch):
    from lazydet.config import compose
    from lazydet.utils import comm

    for native in (True, False):
        monkeypatch.setattr(comm, "cpu_computes_bf16", lambda native=native: native)
        cfg = compose("quickstart")
        assert cfg.train.channels_last is True
        assert cfg.train.amp == ("bf16" if native else None)
