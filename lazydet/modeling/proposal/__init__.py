"""Proposal generators: the Region Proposal Network and its head."""

from lazydet.modeling.proposal.rpn import RPN, StandardRPNHead, find_top_proposals

__all__ = ["RPN", "StandardRPNHead", "find_top_proposals"]
