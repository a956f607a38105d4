"""TinyDetector on a small shapes folder (dataloader.train.dataset.json_file / image_root)."""

import torch
from lazydet.conf._train import train_node
from tiny_train import TinyDetector, parameters_of
from torch.optim.lr_scheduler import LinearLR, MultiStepLR, SequentialLR

from lazydet.config import L, ref
from lazydet.data import DatasetMapper, build_train_loader, load_coco_json, train_augmentations

model = L(TinyDetector)(num_classes=3)
optimizer = L(torch.optim.SGD)(params=L(parameters_of)(module=ref("model")), lr=0.05, momentum=0.9)
schedule = dict(
    max_iter=12,
    lr_scheduler=L(SequentialLR)(
        optimizer=ref("optimizer"),
        schedulers=[
            L(LinearLR)(optimizer=ref("optimizer"), start_factor=0.1, total_iters=3),
            L(MultiStepLR)(optimizer=ref("optimizer"), milestones=[5], gamma=0.1),
        ],
        milestones=[3],
    ),
)
dataloader = dict(
    train=L(build_train_loader)(
        dataset=L(load_coco_json)(json_file="???", image_root="???"),
        mapper=L(DatasetMapper)(
            augmentations=L(train_augmentations)(
                short_edge_length=[24, 32, 40], max_size=64, horizontal_flip=True
            ),
            is_train=True,
        ),
        total_batch_size=3,
        num_workers=0,
        seed=0,
    )
)
train = train_node(checkpoint_period=4, max_to_keep=2, log_period=2, device="cpu")
