"""tests/slurm: SleepyTiny on a small shapes folder (set dataloader.train.dataset.json_file and
image_root), 20 iterations of batch 2 on CPU."""

import torch
from lazydet.conf._train import train_node
from slurm_tiny import SleepyTiny, parameters_of

from lazydet.config import L, ref
from lazydet.data import DatasetMapper, build_train_loader, load_coco_json, train_augmentations

model = L(SleepyTiny)(num_classes=3, step_seconds=0.0, fail_at=-1)
optimizer = L(torch.optim.SGD)(params=L(parameters_of)(module=ref("model")), lr=0.05, momentum=0.9)
schedule = dict(max_iter=20, lr_scheduler=None)
dataloader = dict(
    train=L(build_train_loader)(
        dataset=L(load_coco_json)(json_file="???", image_root="???"),
        mapper=L(DatasetMapper)(
            augmentations=L(train_augmentations)(
                short_edge_length=[24, 32], max_size=48, horizontal_flip=True
            ),
            is_train=True,
        ),
        total_batch_size=2,
        num_workers=0,
        seed=0,
    )
)
train = train_node(checkpoint_period=5, max_to_keep=2, log_period=5, device="cpu")
