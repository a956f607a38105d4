"""The data loaders shared by the experiments, fed by the ``dataset`` group's values."""

from lazydet.config import L
from lazydet.data import (
    DatasetMapper,
    build_test_loader,
    build_train_loader,
    test_augmentations,
    train_augmentations,
)
from lazydet.data.catalog import flip_indices_from_metadata


def detection_dataloader(
    *, use_masks: bool = False, use_keypoints: bool = False, total_batch_size: int = 16
) -> dict:
    """``dict(train=..., test=...)``: loaders for the dataset the ``dataset`` group chose."""
    flip = L(flip_indices_from_metadata)("${dataset.train}") if use_keypoints else None
    return dict(
        train=L(build_train_loader)(
            dataset="${dataset.train}",
            mapper=L(DatasetMapper)(
                augmentations=L(train_augmentations)(
                    short_edge_length="${dataset.train_short_edge}",
                    max_size="${dataset.max_size}",
                    horizontal_flip=True,
                ),
                is_train=True,
                use_masks=use_masks,
                use_keypoints=use_keypoints,
                keypoint_flip_indices=flip,
                filter_empty=True,
            ),
            total_batch_size=total_batch_size,
            num_workers="${dataset.num_workers}",
            seed=0,
        ),
        test=L(build_test_loader)(
            dataset="${dataset.test}",
            mapper=L(DatasetMapper)(
                augmentations=L(test_augmentations)(
                    short_edge_length="${dataset.test_short_edge}", max_size="${dataset.max_size}"
                ),
                is_train=False,
            ),
            batch_size=1,
            num_workers=2,
        ),
    )
