"""Every project experiment (projects/*/configs/*.py) can evaluate and predict: its test
pipeline (mapper + model) runs on a real photo, and a run that evaluates has an evaluator.

projects/vitdet's test resize asked for a short edge equal to its max size, which torchvision
refuses on every image, and it set train.eval_period with no evaluator: both failed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lazydet.config import compose, instantiate
from lazydet.data import DatasetMapper
from lazydet.engine.evaluation_setup import check_evaluation_setup
from lazydet.evaluation.predictor import Predictor

PROJECTS = Path(__file__).resolve().parents[2] / "projects"

EXPERIMENTS = sorted(
    (path.parents[1].name, path.stem)
    for path in PROJECTS.glob("*/configs/*.py")
    if not path.name.startswith("_")
)
# What makes each project's model small enough for 2 CPU cores; the pipeline is unchanged.
SMALL = {"vitdet": ["model.backbone=vit_tiny", "lsj.image_size=128"]}
PHOTO = "coco_person_val2017/000000040083.jpg"  # 500 x 333, a real COCO photo
# The photo's size after each test resize (hand-computed): vitdet puts the long edge at
# lsj.image_size (128 * 333 / 500 = 85.2); custom_head's quickstart puts the short edge at 128.
RESIZED = {"vitdet": (85, 128), "custom_head": (128, 192)}


def test_every_project_experiment_is_listed():
    assert ("vitdet", "vitdet_mask_rcnn_b") in EXPERIMENTS
    assert ("custom_head", "light_mask_rcnn_shapes") in EXPERIMENTS


@pytest.mark.parametrize(("name", "experiment"), EXPERIMENTS)
def test_test_pipeline_runs_on_a_real_photo(name, experiment, project, shared_data: Path):
    project(name)
    photo = shared_data / PHOTO
    if not photo.is_file():
        pytest.skip(f"{photo} is absent")
    check_evaluation_setup(compose(experiment))  # as the project ships it
    cfg = compose(experiment, [*SMALL.get(name, []), "train.init_checkpoint=null"])

    mapper = instantiate(cfg.dataloader.test.mapper)
    assert isinstance(mapper, DatasetMapper)
    record = {"file_name": str(photo), "image_id": 40083, "height": 333, "width": 500}
    inputs = mapper(dict(record))
    assert tuple(inputs["image"].shape[1:]) == RESIZED[name]
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        (output,) = model([inputs])
    instances = output["instances"]
    assert instances.image_size == (333, 500)  # predictions in the photo's own pixels

    # lazydet.predict's path: the predictor applies the same test augmentations.
    predictor = Predictor.from_config(cfg, weights="random", device="cpu")
    (predicted,) = predictor.predict([photo])
    assert predicted.image_size == (333, 500)
