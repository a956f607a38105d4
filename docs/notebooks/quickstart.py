# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # lazydet in a notebook
#
# A config is data until you build it: compose an experiment, look at it, change it (with
# typos caught), swap parts, share one object between two places, build it, train it a few
# iterations on the bundled `shapes` set, predict with the result and save the config.
#
# This file is a [jupytext](https://jupytext.readthedocs.io) notebook: open it in Jupyter
# (`pip install -e ".[notebook]"` brings Jupyter, nbconvert and jupytext) or convert it:
# `jupytext --to ipynb docs/notebooks/quickstart.py`. `tests/test_docs_commands.py` executes
# it on every test run. Everything here runs on a laptop CPU in about a minute.

# %%
import tempfile
from pathlib import Path

import torch
from IPython.display import display

from lazydet.config import (
    ConfigError,
    L,
    apply_overrides,
    compose,
    diff,
    format_node,
    instantiate,
    load,
    ref,
    save,
)

work = Path(tempfile.mkdtemp(prefix="lazydet_notebook_"))

# %% [markdown]
# ## Compose an experiment
#
# `compose(name, overrides)` is what `python -m lazydet.train conf=NAME OVERRIDES...` does: it
# finds `conf/quickstart.py` (or an experiment in a folder of `LAZYDET_CONFIG_PATH`), fills the
# groups it selects (`dataset=shapes`, `optimizer=sgd`, `schedule=quickstart`), applies the
# overrides and validates the result. Nothing is built yet.

# %%
cfg = compose("quickstart")
print(format_node(cfg.optimizer))
print(format_node(cfg.model.roi_heads))

# %% [markdown]
# ## Diff two configs
#
# `diff` lists what changed, key by key (`~` changed, `+` added, `-` removed).

# %%
faster = compose("quickstart", ["optimizer.lr=0.01", "model.roi_heads.batch_size_per_image=32"])
print(diff(cfg, faster))

# %% [markdown]
# ## Edit a value; a typo is caught with a suggestion
#
# Every write is checked against the signature of the class the node configures
# (`torch.optim.SGD` here), in Python as on the command line.

# %%
cfg.optimizer.lr = 0.01  # fine
try:
    cfg.optimizer.lrr = 0.01
except ConfigError as error:
    print(error)
try:
    apply_overrides(cfg, ["train.log_perod=5"])  # the command line's syntax
except ConfigError as error:
    print(error)

# %% [markdown]
# ## Swap the backbone
#
# In `mask_rcnn_fpn` the backbone is a group: choosing another option replaces the whole
# subtree, exactly as `model.backbone=vit_b` on the command line. The heads are sized from the
# backbone's output when the model is built, so nothing else changes.

# %%
resnet = compose("mask_rcnn_fpn", ["dataset=shapes", "model.backbone=resnet18"])
vit = apply_overrides(compose("mask_rcnn_fpn", ["dataset=shapes"]), ["model.backbone=vit_b"])
print(diff(resnet.model.backbone, vit.model.backbone, names=("resnet18", "vit_b")))

# %% [markdown]
# In `quickstart` the backbone is written inline: change it as any value.

# %%
cfg.model.backbone.bottom_up.depth = 34
print(diff(compose("quickstart"), cfg))
cfg.model.backbone.bottom_up.depth = 18  # back to the quick one

# %% [markdown]
# ## Share one module between two places: `ref`
#
# `ref("key")` is the object built at `key`, not a copy. The experiment already uses it: the
# optimizer's parameter groups are made from `ref("model")`, the very model being trained.

# %%
print(format_node(cfg.optimizer.params))
tied = {
    "embedding": L(torch.nn.Embedding)(num_embeddings=10, embedding_dim=4),
    "decoder": L(torch.nn.Sequential)(ref("embedding")),
}
built = instantiate(tied)
print("one object in two places:", built["decoder"][0] is built["embedding"])

# %% [markdown]
# ## Build the model
#
# `instantiate(cfg.model)` builds the detector; `"${dataset.num_classes}"` in the heads is
# resolved against the whole config at this moment.

# %%
model = instantiate(cfg.model)
print(type(model).__name__, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
print("box classes:", model.roi_heads.num_classes)

# %% [markdown]
# ## Train a few iterations on `shapes`, in this process
#
# `lazydet.train.run(cfg, run_dir)` is what the command line runs for one job: it saves the
# config, builds it and trains with checkpoints, metrics and TensorBoard events in `run_dir`.
# A small split of the synthetic shapes (registered here, generated on first use) keeps this
# to seconds; the real quick start trains 1200 iterations
# (`python -m lazydet.train conf=quickstart`).

# %%
from lazydet.data.datasets.shapes import register_shapes  # noqa: E402
from lazydet.train import run  # noqa: E402

register_shapes("shapes_notebook", num_images=8, seed=3)
apply_overrides(
    cfg,
    [
        "dataset.train=shapes_notebook",
        "dataset.test=shapes_notebook",
        "dataset.num_workers=0",
        "dataloader.train.total_batch_size=2",
        "schedule.max_iter=3",
        "train.log_period=1",
        "train.device=cpu",
    ],
)
report = run(cfg, work / "run")
print(report)

# %% [markdown]
# ## Predict and look
#
# `Predictor.from_checkpoint` rebuilds the model from the config stored in the checkpoint and
# takes the class names from it; `draw_instances` makes the picture. Three iterations teach the
# model little: run the full quick start for boxes that fit.

# %%
from lazydet.data import DatasetCatalog, read_image  # noqa: E402
from lazydet.evaluation import Predictor  # noqa: E402
from lazydet.utils.visualizer import draw_instances  # noqa: E402

predictor = Predictor.from_checkpoint(work / "run" / "model_final.pth", device="cpu")
image = read_image(DatasetCatalog.get("shapes_notebook")[0]["file_name"])
instances = predictor(image)
print(len(instances), "detections; classes:", predictor.class_names)
display(draw_instances(image, instances[:5], class_names=predictor.class_names))

# %% [markdown]
# ## Save the config and load it back
#
# `save` writes runnable Python (or YAML for a `.yaml` name); `load` reads it back equal.

# %%
save(cfg, work / "experiment.py")
print((work / "experiment.py").read_text()[:600])
reloaded = load(work / "experiment.py")
assert reloaded == cfg and diff(reloaded, cfg) == ""
print("reloaded equal:", reloaded == cfg)
