"""``RoiProposer``: ROI proposals from relevance maps as an ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from focus_modules.config import FocusConfig
from focus_modules.ops.propose_rois import RoiSet, propose_rois


class RoiProposer(nn.Module):
    """Regions of interest from object relevance maps (Sec. 3.3, Table 7); see
    :func:`focus_modules.functional.propose_rois` for shapes and semantics.

    Args:
        k: number of anchors per map.
        s_min: side of the initial square ROI, in cells.
        s_max: largest side an ROI may grow to.
        s_dist: minimum Euclidean distance (cells) between anchors.
        expand_threshold: an ROI grows while its mean relevance is
            ``>= expand_threshold * anchor score``.
        nms_threshold: IoU above which a weaker ROI is suppressed.
        smooth_sigma: std of the Gaussian smoothing (cells), ``None`` for none.
        downsample: average-pooling factor after smoothing (1 = none).

    Example:
        >>> import torch
        >>> proposer = RoiProposer.from_config(FocusConfig.preset("llava-1.5", dataset="vstar"))
        >>> maps = torch.zeros(1, 8, 8)  # [B, Hmax, Wmax]: one 8 x 8 map, hot at row 5, column 2
        >>> maps[0, 5, 2] = 1.0
        >>> rois = proposer(maps, torch.tensor([[8, 8]]))  # RoiSet: boxes [B, K, 4] in cells, scores, valid
        >>> rois.boxes[:, 0]  # the best ROI: s_min = 3 cells around the anchor, (x1, y1, x2, y2)
        tensor([[1., 4., 4., 7.]])
    """

    def __init__(
        self,
        k: int = 30,
        s_min: int = 3,
        s_max: int = 5,
        s_dist: float = 2,
        expand_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        smooth_sigma: float | None = None,
        downsample: int = 1,
    ) -> None:
        super().__init__()
        self.k = k
        self.s_min = s_min
        self.s_max = s_max
        self.s_dist = s_dist
        self.expand_threshold = expand_threshold
        self.nms_threshold = nms_threshold
        self.smooth_sigma = smooth_sigma
        self.downsample = downsample

    @classmethod
    def from_config(cls, cfg: FocusConfig) -> RoiProposer:
        """The proposer with ``cfg``'s proposal hyper-parameters."""
        return cls(
            k=cfg.k,
            s_min=cfg.s_min,
            s_max=cfg.s_max,
            s_dist=cfg.s_dist,
            expand_threshold=cfg.expand_threshold,
            nms_threshold=cfg.nms_threshold,
            smooth_sigma=cfg.smooth_sigma,
            downsample=cfg.downsample,
        )

    def forward(self, maps: Tensor, grid_hw: Tensor, valid_mask: Tensor | None = None) -> RoiSet:
        return propose_rois(
            maps,
            grid_hw,
            self.k,
            self.s_min,
            self.s_max,
            self.s_dist,
            self.expand_threshold,
            self.nms_threshold,
            self.smooth_sigma,
            self.downsample,
            valid_mask,
        )

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, s_min={self.s_min}, s_max={self.s_max}, s_dist={self.s_dist}, "
            f"expand_threshold={self.expand_threshold}, nms_threshold={self.nms_threshold}, "
            f"smooth_sigma={self.smooth_sigma}, downsample={self.downsample}"
        )
