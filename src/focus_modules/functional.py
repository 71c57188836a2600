"""Stateless FOCUS operations (layer 1 of the library). Each has a pure-PyTorch reference
that is the correctness oracle and the CPU path."""

from focus_modules.ops.existence import existence_confidence
from focus_modules.ops.propose_rois import propose_rois
from focus_modules.ops.relevance_map import relevance_map
from focus_modules.ops.stitch_maps import stitch_maps

__all__ = ["existence_confidence", "propose_rois", "relevance_map", "stitch_maps"]
