"""Every shipped config is buildable from untrusted YAML: ``lazydet.config.SAFE_TARGETS`` names
each class and function that ``conf/`` and ``projects/vitdet/configs`` use (a checkpoint stores
its config as YAML and ``predict checkpoint=`` reads it back untrusted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lazydet.config import compose, load, save
from lazydet.config.hydra_bridge import register_with_hydra
from lazydet.config.lazy import target_nodes

REPO = Path(__file__).resolve().parents[2]


def _shipped() -> list[tuple[str, list[str]]]:
    tree = register_with_hydra()
    cases = [(name, []) for name in tree.experiments()]
    groups = tree.groups()
    for group, options in groups.items():
        if group == "dataset":
            continue  # datasets name no targets beyond the loaders every experiment has
        cases += [("mask_rcnn_fpn", [f"{group}={option}"]) for option in options]
    return cases


def _targets(cfg) -> set[str]:
    return {node["_target_"] for _, node in target_nodes(cfg)}


@pytest.mark.parametrize(("experiment", "overrides"), _shipped(), ids=lambda v: str(v))
def test_shipped_config_loads_untrusted_after_a_yaml_round_trip(tmp_path, experiment, overrides):
    cfg = compose(experiment, overrides)
    path = tmp_path / "config.yaml"
    save(cfg, path)
    reloaded = load(path, trusted=False)  # raises on any target outside SAFE_TARGETS
    assert _targets(reloaded) == _targets(cfg)


def test_vitdet_project_loads_untrusted(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(REPO / "projects" / "vitdet" / "configs"))
    for experiment in ("vitdet_mask_rcnn_b", "vitdet_mask_rcnn_l"):
        path = tmp_path / f"{experiment}.yaml"
        save(compose(experiment), path)
        load(path, trusted=False)
