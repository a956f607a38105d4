"""Instances: field bookkeeping, indexing and concatenation (hand-computed expectations)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from lazydet.structures import Boxes, Instances


def make_instances() -> Instances:
    return Instances(
        image_size=(20, 30),
        gt_boxes=Boxes(torch.arange(12, dtype=torch.float32).view(3, 4)),
        gt_classes=torch.tensor([7, 8, 9]),
        names=["a", "b", "c"],
    )


def test_fields_as_attributes_and_accessors():
    instances = make_instances()
    assert instances.image_size == (20, 30)
    assert len(instances) == 3
    assert torch.equal(instances.gt_classes, torch.tensor([7, 8, 9]))
    instances.scores = torch.tensor([0.1, 0.2, 0.3])
    assert instances.has("scores") and instances.get("scores") is instances.scores
    assert list(instances.get_fields()) == ["gt_boxes", "gt_classes", "names", "scores"]
    instances.remove("scores")
    assert not instances.has("scores")
    instances.set("scores", torch.zeros(3))
    del instances.scores
    assert not instances.has("scores")


def test_get_fields_returns_a_new_dict():
    instances = make_instances()
    instances.get_fields().pop("gt_classes")
    assert instances.has("gt_classes")


def test_missing_field_errors_name_the_field():
    instances = make_instances()
    with pytest.raises(AttributeError, match=r"'scores'.*gt_boxes"):
        _ = instances.scores
    with pytest.raises(KeyError, match="scores"):
        instances.get("scores")
    with pytest.raises(KeyError, match="scores"):
        instances.remove("scores")


def test_unequal_length_error_names_the_field():
    instances = make_instances()
    with pytest.raises(ValueError, match=r"'scores' has length 2.*length 3"):
        instances.scores = torch.zeros(2)
    with pytest.raises(ValueError, match="'b' has length 1"):
        Instances((4, 4), a=torch.zeros(2), b=torch.zeros(1))
    # Replacing the only field with another length is allowed: no other field constrains it.
    single = Instances((4, 4), a=torch.zeros(2))
    single.a = torch.zeros(5)
    assert len(single) == 5


def test_bad_fields_and_image_size():
    with pytest.raises(TypeError, match="'count' must have a length"):
        Instances((4, 4), count=3)
    with pytest.raises(ValueError, match="image_size"):
        Instances((4,))
    with pytest.raises(ValueError, match="reserved"):
        Instances((4, 4)).set("image_size", torch.zeros(1))
    with pytest.raises(ValueError, match="identifier"):
        Instances((4, 4)).set("_private", torch.zeros(1))
    instances = make_instances()
    with pytest.raises(AttributeError, match="image_size"):
        instances.image_size = (1, 1)


def test_keyword_image_size():
    assert Instances(image_size=(3, 5)).image_size == (3, 5)


def test_empty_instances_has_length_zero():
    assert len(Instances((5, 5))) == 0


def test_int_index_gives_length_one_instances():
    instances = make_instances()
    for position, expected in ((1, 1), (-1, 2)):
        one = instances[position]
        assert isinstance(one, Instances) and len(one) == 1
        assert isinstance(one.gt_boxes, Boxes)
        assert torch.equal(one.gt_boxes.tensor, instances.gt_boxes.tensor[expected : expected + 1])
        assert torch.equal(one.gt_classes, torch.tensor([7 + expected]))
        assert one.names == [["a", "b", "c"][expected]]
        assert one.image_size == (20, 30)
    with pytest.raises(IndexError, match="out of range"):
        instances[3]


def test_slice_mask_and_long_index():
    instances = make_instances()
    sliced = instances[1:]
    assert sliced.gt_classes.tolist() == [8, 9] and sliced.names == ["b", "c"]
    masked = instances[torch.tensor([True, False, True])]
    assert masked.gt_classes.tolist() == [7, 9] and masked.names == ["a", "c"]
    assert masked.gt_boxes.tensor[:, 0].tolist() == [0.0, 8.0]
    indexed = instances[torch.tensor([2, 0])]
    assert indexed.gt_classes.tolist() == [9, 7] and indexed.names == ["c", "a"]
    nothing = instances[instances.gt_classes > 100]
    assert len(nothing) == 0 and nothing.names == [] and len(nothing.gt_boxes) == 0


def test_cat():
    instances = make_instances()
    joined = Instances.cat([instances[:1], instances[1:]])
    assert joined.gt_classes.tolist() == [7, 8, 9]
    assert joined.names == ["a", "b", "c"]
    assert torch.equal(joined.gt_boxes.tensor, instances.gt_boxes.tensor)
    assert joined.image_size == (20, 30)


def test_cat_errors():
    instances = make_instances()
    with pytest.raises(ValueError, match="non-empty"):
        Instances.cat([])
    other_size = Instances((1, 1), gt_boxes=Boxes(torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="image_size"):
        Instances.cat([instances, other_size])
    fewer = make_instances()
    fewer.remove("names")
    with pytest.raises(ValueError, match=r"missing: \['names'\]"):
        Instances.cat([instances, fewer])
    opaque = Instances((1, 1), thing=range(2))
    with pytest.raises(TypeError, match="'thing'"):
        Instances.cat([opaque, opaque])


def test_to_moves_tensor_fields_and_keeps_others():
    instances = make_instances()
    moved = instances.to("cpu")
    assert isinstance(moved.gt_boxes, Boxes) and moved.names is instances.names
    doubled = instances.to(torch.float64)
    assert doubled.gt_boxes.tensor.dtype == torch.float64


def test_repr_shows_size_count_and_fields():
    text = repr(make_instances())
    assert "num_instances=3" in text
    assert "image_height=20" in text and "image_width=30" in text
    assert "gt_boxes, gt_classes, names" in text


def test_pickle_and_deepcopy_round_trip():
    instances = make_instances()
    for restored in (pickle.loads(pickle.dumps(instances)), copy.deepcopy(instances)):
        assert restored.image_size == (20, 30)
        assert torch.equal(restored.gt_classes, instances.gt_classes)
        assert restored.names == instances.names
