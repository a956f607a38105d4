"""subsample_labels against torchvision's BalancedPositiveNegativeSampler and counting rules."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from lazydet.modeling.sampling import subsample_labels


@pytest.mark.parametrize(("num_pos", "num_neg"), [(5, 300), (200, 300), (0, 10), (40, 3)])
def test_same_draw_as_torchvision_under_the_same_seed(num_pos, num_neg):
    g = torch.Generator().manual_seed(num_pos + num_neg)
    labels = torch.cat((torch.ones(num_pos), torch.zeros(num_neg), torch.full((50,), -1.0)))[
        torch.randperm(num_pos + num_neg + 50, generator=g)
    ]
    torch.manual_seed(123)
    pos_mask, neg_mask = BalancedPositiveNegativeSampler(64, 0.25)([labels])
    torch.manual_seed(123)
    pos, neg = subsample_labels(labels, num_samples=64, positive_fraction=0.25, background_label=0)
    assert sorted(pos.tolist()) == torch.nonzero(pos_mask[0]).squeeze(1).tolist()
    assert sorted(neg.tolist()) == torch.nonzero(neg_mask[0]).squeeze(1).tolist()


def test_counts_and_membership_with_class_labels():
    # Fast R-CNN style: classes 0..4, background 5, ignored -1.
    labels = torch.tensor([0, 3, 5, 5, 5, 5, -1, 4, 5, 5])
    pos, neg = subsample_labels(labels, num_samples=4, positive_fraction=0.5, background_label=5)
    assert len(pos) == 2 and len(neg) == 2
    assert set(pos.tolist()) <= {0, 1, 7}
    assert set(neg.tolist()) <= {2, 3, 4, 5, 8, 9}
    # Too few positives: negatives fill the batch.
    pos, neg = subsample_labels(labels, num_samples=8, positive_fraction=0.5, background_label=5)
    assert len(pos) == 3 and len(neg) == 5


def test_bad_fraction_raises():
    with pytest.raises(ValueError, match="positive_fraction"):
        subsample_labels(torch.zeros(3), num_samples=2, positive_fraction=1.5, background_label=0)
