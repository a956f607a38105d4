"""BoxOracle (tests/evaluation/oracle_model.py) on a COCO json of the test's own
(``dataset=coco_json``): what lazydet.evaluate and lazydet.predict compute is a known function of
the weights given."""

from lazydet.conf._train import train_node
from oracle_model import BoxOracle

from lazydet.config import L
from lazydet.data import DatasetMapper, build_test_loader, test_augmentations

defaults = {"dataset": "coco_json"}

model = L(BoxOracle)(num_classes="${dataset.num_classes}")
dataloader = dict(
    test=L(build_test_loader)(
        dataset="${dataset.test}",
        mapper=L(DatasetMapper)(
            augmentations=L(test_augmentations)(short_edge_length=32, max_size=64),
            is_train=False,
        ),
        num_workers=0,
    )
)
# The weights to evaluate or predict with: train.init_checkpoint=FILE on the command line.
train = train_node(device="cpu")
