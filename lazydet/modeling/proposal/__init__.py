"""Proposal generators: the Region Proposal Network and its head."""

from lazydet.modeling.proposal.rpn import (
    RPN,
    TORCHVISION_RPN_OPTIONS,
    StandardRPNHead,
    find_top_proposals,
)

__all__ = ["RPN", "TORCHVISION_RPN_OPTIONS", "StandardRPNHead", "find_top_proposals"]
