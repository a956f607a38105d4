"""``loss_weights`` of the modules that return losses: defaults, and one error for a wrong key."""

from __future__ import annotations

import pytest

from lazydet.modeling.loss_weights import loss_weights_with_defaults
from lazydet.modeling.roi_heads import FastRCNNOutputLayers


def test_unset_losses_weigh_one_and_given_ones_are_kept() -> None:
    weights = loss_weights_with_defaults(
        "RPN", {"loss_rpn_loc": 2.0}, ("loss_rpn_cls", "loss_rpn_loc")
    )
    assert weights == {"loss_rpn_cls": 1.0, "loss_rpn_loc": 2.0}
    assert loss_weights_with_defaults("RPN", None, ("a", "b")) == {"a": 1.0, "b": 1.0}


def test_a_misspelt_key_is_an_error_naming_the_module_and_the_key() -> None:
    with pytest.raises(ValueError, match=r"RPN loss_weights has unknown keys \['loss_rpn_clss'\]"):
        loss_weights_with_defaults("RPN", {"loss_rpn_clss": 2.0}, ("loss_rpn_cls", "loss_rpn_loc"))
    with pytest.raises(ValueError, match="FastRCNNOutputLayers loss_weights.*'loss_box_reg'"):
        FastRCNNOutputLayers(input_size=8, num_classes=2, loss_weights={"loss_box": 1.0})
