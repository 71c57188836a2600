"""Regions of interest from object relevance maps (Sec. 3.3, Algorithm in A.5, Table 7).

Per map: optional Gaussian smoothing and average-pool downsampling (global-local models),
min-max normalisation of the valid region to [0, 1], top-k anchors with greedy suppression of
anchors closer than ``s_dist`` to a stronger one, a square ROI of side ``s_min`` around each
anchor grown one cell at a time up to ``s_max`` while the mean relevance inside stays
``>= expand_threshold * anchor score``, ranking by anchor score, NMS.

Everything is batched over maps of different sizes (``[B, Hmax, Wmax]`` with each map's
``grid_hw``) and over anchors. The only Python loop is over the ``k`` greedy anchor picks, which
are sequential by definition, each a handful of ``[B, M]`` tensor ops on a short candidate list.
:func:`candidate_rois` (everything before NMS) has static shapes and compiles with
``torch.compile``; :func:`suppress_overlaps` runs torchvision's ``batched_nms``.

Readings of the paper we chose (it gives no code for this part):

* Valid region: the cells inside ``grid_hw`` and, if given, ``valid_mask`` (e.g. the padded
  sides of a square-padded image). Only valid cells are smoothed, pooled, normalised and
  picked as anchors; invalid cells count as relevance 0 inside an ROI. ROIs are shifted into
  the bounding box of the valid cells (the whole grid without a mask).
* Smoothing is Gaussian (kornia), kernel size ``2 * ceil(3 sigma) + 1``, with each map
  extended past its own grid by symmetric reflection (``... c b a | a b c ... x y z | z y x ...``,
  scipy.ndimage's default), so the batch padding never bleeds into a map, a map gives the same
  result alone or in a batch, a constant map stays constant, and a one-hot peak stays the
  largest cell even at a border (the reflection torch calls "reflect", ``c b | a b c``, would
  double a peak's neighbour at the border). Masked cells (``valid_mask``) are left out by
  normalised convolution, ``blur(map * valid) / blur(valid)``.
* Downsampling by ``d`` averages the valid cells of each ``d x d`` block, blocks aligned at the
  map's top-left corner; a partial block at the bottom/right edge is a cell of its own, so the
  downsampled grid is ``ceil(h / d) x ceil(w / d)`` (``cell_hw``).
* Each map is first divided by its largest magnitude, values below ``NEGLIGIBLE`` (1e-30) of
  it set to zero (subnormal floats slow CPU kernels down; the min-max normalisation below
  makes the scale irrelevant).
* A map whose valid values agree to ``CONSTANT_RTOL`` (constant, all zero, a single cell)
  normalises to 0 everywhere: every anchor scores 0, ties go to the first cell in row-major
  order, and every ROI grows to ``s_max``. Ties are always broken by row-major order, so a
  result never depends on the batch a map was in.
* Anchors: the greedy pass runs over the cells in descending order until ``k`` anchors are
  kept (fewer only when the map runs out of cells), so ``k`` is the number of anchors, as in
  Table 7; a cell at Euclidean distance ``< s_dist`` (in cells) of a kept anchor is skipped.
* Box placement: a side-``s`` box around an anchor at column ``c`` spans columns
  ``[c - (s - 1) // 2, c - (s - 1) // 2 + s)``: centred for odd ``s``, the extra cell on the
  right/bottom for even ``s``; so growing by one cell alternately adds a column/row on the
  right/bottom and on the left/top, and each size contains the previous one. A box that
  crosses the region's border is shifted inside it; a side larger than the region (tiny maps)
  is clamped to the region, so ROIs of maps smaller than ``s_min`` are smaller than ``s_min``.
* Growth: the ``s_min`` box is always kept; size ``s + 1`` replaces size ``s`` while its mean
  normalised relevance is ``>= expand_threshold * anchor score``; the first failing size stops
  the growth. A summed-area table (float64) gives every size's mean at once.
* NMS suppresses a box whose IoU with a stronger kept box is ``> nms_threshold`` (torchvision's
  convention), an IoU exactly at the threshold (e.g. 12/40 at 0.3) is kept on CPU and GPU
  alike; priority is the anchor rank, so ties in score keep the row-major order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from kornia.filters import gaussian_blur2d
from torch import Tensor
from torchvision.ops import batched_nms

# Valid values spanning less than this fraction of their magnitude count as a constant map
# (rounding noise of the smoothing must not be stretched to [0, 1]).
CONSTANT_RTOL = 1e-5
# Valid values below this fraction of a map's largest magnitude are flushed to zero.
NEGLIGIBLE = 1e-30
# Added to nms_threshold for torchvision: an IoU exactly at the threshold is kept on every
# device (its CPU kernel compares the float32 IoU with the float64 threshold and suppresses
# 12/40 at 0.3, its CUDA kernel compares with a float32 threshold and keeps it), while every
# cell-box IoU above the threshold still exceeds it (they differ from it by >= 1 / (10 * union)
# for a one-decimal threshold, far more than this for sides up to ~200 cells).
NMS_TIE_MARGIN = 1e-6
# The Gaussian kernel reaches this many sigmas on each side of its centre.
SMOOTH_RADIUS_SIGMAS = 3.0


class RoiSet(NamedTuple):
    """Regions of interest of a batch of maps, best first.

    Attributes:
        boxes: ``[B, K, 4]`` float32 ``(x1, y1, x2, y2)`` in cells of the (downsampled) map,
            ``x2``/``y2`` exclusive (a box covers columns ``x1 .. x2 - 1``); zeros for padding.
        scores: ``[B, K]`` float32 normalised relevance of each ROI's anchor, in [0, 1],
            descending along ``K``; zero for padding.
        valid: ``[B, K]`` bool, False for padding (always after the valid entries).
        cell_hw: ``[B, 2]`` long ``(h, w)`` of the map the boxes refer to, after downsampling.
        anchors: ``[B, K, 2]`` long ``(x, y)`` cell of each ROI's anchor; zeros for padding.
    """

    boxes: Tensor
    scores: Tensor
    valid: Tensor
    cell_hw: Tensor
    anchors: Tensor


def propose_rois(
    maps: Tensor,
    grid_hw: Tensor,
    k: int,
    s_min: int,
    s_max: int,
    s_dist: float,
    expand_threshold: float,
    nms_threshold: float,
    smooth_sigma: float | None = None,
    downsample: int = 1,
    valid_mask: Tensor | None = None,
) -> RoiSet:
    """Square regions of interest around the strongest cells of each relevance map.

    Args:
        maps: ``[B, Hmax, Wmax]`` float relevance maps (as returned by ``relevance_map``);
            only the top-left ``h x w`` cells of map ``b`` are read; they must be finite.
        grid_hw: ``[B, 2]`` integer ``(h, w)`` of each map, ``1 <= h <= Hmax``, ``1 <= w <= Wmax``.
        k: number of anchors per map (the number of ROIs before NMS).
        s_min: side of the initial square ROI, in cells of the (downsampled) map.
        s_max: largest side an ROI may grow to.
        s_dist: a cell closer than this (Euclidean, in cells) to a stronger anchor is no anchor.
        expand_threshold: an ROI grows while the mean relevance inside stays
            ``>= expand_threshold * anchor score`` (relevance normalised to [0, 1]).
        nms_threshold: an ROI whose IoU with a stronger kept ROI exceeds this is dropped.
        smooth_sigma: std (in cells) of the Gaussian smoothing, ``None`` for none.
        downsample: average-pooling factor applied after smoothing (1 = none).
        valid_mask: optional ``[B, Hmax, Wmax]`` bool, False for cells that must never be
            anchors and are left out of smoothing and normalisation (e.g. the padded sides of a
            square-padded image).

    Returns:
        :class:`RoiSet` with ``K = k`` slots per map: the ROIs that survive NMS first, sorted by
        anchor score (descending), then padding with ``valid`` False.

    Example:
        >>> maps = torch.zeros(1, 8, 8)  # one 8 x 8 map, hot at (row 5, column 2) and its right neighbour
        >>> maps[0, 5, 2], maps[0, 5, 3] = 1.0, 0.8
        >>> rois = propose_rois(maps, torch.tensor([[8, 8]]), k=5, s_min=1, s_max=3, s_dist=2,
        ...                     expand_threshold=0.5, nms_threshold=0.3)
        >>> rois.boxes[:, 0]  # [B, 4] cells (x1, y1, x2, y2): 2 x 2 would average 0.45 < 0.5 x 1.0
        tensor([[2., 5., 3., 6.]])
    """
    check_roi_inputs(
        maps, grid_hw, k, s_min, s_max, s_dist, expand_threshold, nms_threshold, smooth_sigma, downsample, valid_mask
    )
    candidates = candidate_rois(
        maps, grid_hw.to(maps.device), k, s_min, s_max, s_dist, expand_threshold, smooth_sigma, downsample, valid_mask
    )
    return suppress_overlaps(candidates, nms_threshold)


def candidate_rois(
    maps: Tensor,
    grid_hw: Tensor,
    k: int,
    s_min: int,
    s_max: int,
    s_dist: float,
    expand_threshold: float,
    smooth_sigma: float | None = None,
    downsample: int = 1,
    valid_mask: Tensor | None = None,
) -> RoiSet:
    """Every anchor's grown ROI before NMS, as a :class:`RoiSet` sorted by anchor score.

    Same arguments as :func:`propose_rois` (without ``nms_threshold``); inputs are not checked
    here and ``grid_hw`` must be on ``maps.device``. Static shapes, no host synchronisation:
    this is the part that ``torch.compile`` can capture whole.
    """
    relevance, valid, cell_hw = prepare_maps(maps, grid_hw, smooth_sigma, downsample, valid_mask)
    anchor_yx, scores, anchor_valid = select_anchors(relevance, valid, k, s_dist)
    boxes = grow_boxes(relevance, valid, anchor_yx, scores, s_min, s_max, expand_threshold)
    keep = anchor_valid[..., None]
    return RoiSet(
        boxes=torch.where(keep, boxes, 0.0),
        scores=torch.where(anchor_valid, scores, 0.0),
        valid=anchor_valid,
        cell_hw=cell_hw,
        anchors=torch.where(keep, anchor_yx.flip(-1), 0),
    )


def prepare_maps(
    maps: Tensor,
    grid_hw: Tensor,
    smooth_sigma: float | None = None,
    downsample: int = 1,
    valid_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Smooth, downsample and min-max normalise the valid region of each map.

    Returns:
        ``relevance`` ``[B, H', W']`` in [0, 1] on valid cells and 0 elsewhere (float32, or
        float64 for float64 maps), ``valid`` ``[B, H', W']`` bool, and ``cell_hw`` ``[B, 2]``
        long, with ``H' = ceil(Hmax / downsample)`` and ``W'`` likewise.
    """
    dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    _, h_max, w_max = maps.shape
    rows = torch.arange(h_max, device=maps.device)[None, :, None]
    cols = torch.arange(w_max, device=maps.device)[None, None, :]
    valid = (rows < grid_hw[:, 0, None, None]) & (cols < grid_hw[:, 1, None, None])
    if valid_mask is not None:
        valid = valid & valid_mask
    weight = valid.to(dtype)
    values = torch.where(valid, maps.to(dtype), 0.0)
    # Scale by the largest magnitude and flush what is negligible next to it: products of
    # relevance distributions reach subnormal floats, which slow CPU kernels down ~10x.
    # Min-max normalisation makes the scale irrelevant.
    scale = values.abs().amax((1, 2), keepdim=True)
    values = values / torch.where(scale > 0, scale, 1.0)
    values = torch.where(values.abs() < NEGLIGIBLE, 0.0, values)

    if smooth_sigma is not None:
        blurred = smooth(torch.stack([values, weight], 1), grid_hw, smooth_sigma)
        values = torch.where(valid, blurred[:, 0] / blurred[:, 1].clamp_min(torch.finfo(dtype).tiny), 0.0)

    if downsample > 1:
        pad_h, pad_w = -h_max % downsample, -w_max % downsample
        stacked = F.pad(torch.stack([values, weight], 1), (0, pad_w, 0, pad_h))
        pooled = F.avg_pool2d(stacked, downsample)  # block sums / d^2; the d^2 cancels below
        valid = pooled[:, 1] > 0
        values = torch.where(valid, pooled[:, 0] / pooled[:, 1].clamp_min(torch.finfo(dtype).tiny), 0.0)
    cell_hw = (grid_hw.long() + downsample - 1) // downsample

    low = torch.where(valid, values, math.inf).amin((1, 2), keepdim=True)
    high = torch.where(valid, values, -math.inf).amax((1, 2), keepdim=True)
    any_valid = valid.flatten(1).any(1)[:, None, None]
    low = torch.where(any_valid, low, 0.0)
    high = torch.where(any_valid, high, 0.0)
    span = high - low
    varies = span > CONSTANT_RTOL * torch.maximum(high.abs(), low.abs())
    relevance = torch.where(valid & varies, (values - low) / torch.where(varies, span, 1.0), 0.0)
    return relevance, valid, cell_hw


def symmetric_index(length: int, radius: int, size: Tensor) -> Tensor:
    """Indices into ``[0, size)`` for positions ``-radius .. length + radius - 1`` under
    symmetric reflection at both ends (repeated for maps smaller than ``radius``).

    Args:
        length: padded length of the batch (``Hmax`` or ``Wmax``).
        radius: cells added on each side.
        size: ``[B]`` long, each map's own length.

    Returns:
        ``[B, length + 2 * radius]`` long.
    """
    position = torch.arange(-radius, length + radius, device=size.device)[None, :]
    period = 2 * size[:, None]
    folded = position % period  # non-negative: the period is positive
    # The second half of a period runs backwards. Written as a minimum, not as
    # torch.where(folded >= size, ...): inductor's AVX2 code for that select with a per-row
    # bound gives wrong indices (torch 2.14).
    return torch.minimum(folded, period - 1 - folded)


def smooth(planes: Tensor, grid_hw: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of ``[B, C, Hmax, Wmax]`` planes, each map extended past its own
    ``grid_hw`` by symmetric reflection; cells outside the grid are never read.

    Returns:
        ``[B, C, Hmax, Wmax]``; only cells inside each grid are meaningful.
    """
    batch, _, h_max, w_max = planes.shape
    radius = math.ceil(SMOOTH_RADIUS_SIGMAS * sigma)
    rows = symmetric_index(h_max, radius, grid_hw[:, 0].long())  # [B, Hmax + 2r]
    cols = symmetric_index(w_max, radius, grid_hw[:, 1].long())  # [B, Wmax + 2r]
    image = torch.arange(batch, device=planes.device)[:, None, None]
    padded = torch.stack([plane[image, rows[:, :, None], cols[:, None, :]] for plane in planes.unbind(1)], 1)
    # All planes as channels of one image: the CPU convolution is ~6x faster than with a batch
    # of 2-channel images. The border mode only touches the outer `radius` cells, which the
    # crop drops.
    channels = rearrange(padded, "b c h w -> 1 (b c) h w")
    blurred = gaussian_blur2d(channels, 2 * radius + 1, (sigma, sigma), border_type="constant")
    blurred = rearrange(blurred, "1 (b c) h w -> b c h w", b=batch)
    return blurred[:, :, radius : radius + h_max, radius : radius + w_max]


def disc_cells(s_dist: float) -> int:
    """Number of lattice cells at Euclidean distance ``< s_dist`` from a cell (itself included)."""
    reach = math.ceil(s_dist)
    offsets = range(-reach, reach + 1)
    return sum(dy * dy + dx * dx < s_dist * s_dist for dy in offsets for dx in offsets)


def select_anchors(relevance: Tensor, valid: Tensor, k: int, s_dist: float) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy top-``k`` anchors: the strongest valid cell, then repeatedly the strongest valid
    cell at distance ``>= s_dist`` from every anchor kept so far.

    Only the ``M = k * disc_cells(s_dist)`` strongest cells can matter: before the ``k``-th
    anchor is kept, every skipped cell lies in the ``< s_dist`` disc of one of the first
    ``k - 1`` anchors, so at most ``(k - 1) * disc_cells`` cells precede it.

    Returns:
        ``anchor_yx`` ``[B, k, 2]`` long ``(row, col)``, ``scores`` ``[B, k]`` and ``anchor_valid``
        ``[B, k]`` bool (False once a map has no cell left), in pick order (scores descending).
    """
    batch, _, width = relevance.shape
    flat = torch.where(valid, relevance, -math.inf).flatten(1)
    num_candidates = min(flat.shape[1], k * max(disc_cells(s_dist), 1))
    # Stable: equal scores keep row-major order, whatever the padded width of the batch.
    cand_scores, cand_flat = torch.sort(flat, dim=1, descending=True, stable=True)
    cand_scores, cand_flat = cand_scores[:, :num_candidates], cand_flat[:, :num_candidates]
    cand_y = torch.div(cand_flat, width, rounding_mode="floor")
    cand_x = cand_flat - cand_y * width
    positions = torch.arange(num_candidates, device=relevance.device)
    available = cand_scores > -math.inf
    min_dist_sq = float(s_dist) ** 2

    picks, picked_valid = [], []
    for _ in range(k):
        pick = available.to(torch.uint8).argmax(1, keepdim=True)  # first available = strongest left
        picked_valid.append(available.gather(1, pick))
        dist_sq = (cand_y - cand_y.gather(1, pick)) ** 2 + (cand_x - cand_x.gather(1, pick)) ** 2
        available = available & (dist_sq >= min_dist_sq) & (positions != pick)
        picks.append(pick)
    picks = torch.cat(picks, 1)
    anchor_valid = torch.cat(picked_valid, 1)
    anchor_yx = torch.stack([cand_y.gather(1, picks), cand_x.gather(1, picks)], -1)
    return anchor_yx, cand_scores.gather(1, picks), anchor_valid


def valid_extent(valid: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """First and one-past-last index along ``dim`` (1 = rows, 2 = cols) holding a valid cell,
    as ``[B, 1, 1]`` long; ``(0, n)`` for a map without valid cells."""
    occupied = valid.any(3 - dim).to(torch.uint8)  # [B, n]
    first = occupied.argmax(1)
    end = occupied.shape[1] - occupied.flip(1).argmax(1)
    return first[:, None, None], end[:, None, None]


def place_interval(center: Tensor, sizes: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """Intervals ``[start, end)`` of the given sizes around ``center`` (extra cell after the
    centre for even sizes), shifted into ``[low, high)`` and clamped to it when too long."""
    start = center[..., None] - (sizes - 1) // 2
    start = torch.maximum(torch.minimum(start, high - sizes), low)
    return start, torch.minimum(start + sizes, high)


def grow_boxes(
    relevance: Tensor,
    valid: Tensor,
    anchor_yx: Tensor,
    scores: Tensor,
    s_min: int,
    s_max: int,
    expand_threshold: float,
) -> Tensor:
    """Grow each anchor's ``s_min`` square one cell at a time up to ``s_max`` while the mean
    relevance inside stays ``>= expand_threshold * score``. Returns ``[B, K, 4]`` float32
    ``(x1, y1, x2, y2)``."""
    sizes = torch.arange(s_min, s_max + 1, device=relevance.device)  # [S]
    top, bottom = valid_extent(valid, 1)
    left, right = valid_extent(valid, 2)
    y1, y2 = place_interval(anchor_yx[..., 0], sizes, top, bottom)  # [B, K, S]
    x1, x2 = place_interval(anchor_yx[..., 1], sizes, left, right)

    # Summed-area table with a zero first row/column: sat[y, x] = sum of relevance[:y, :x].
    sat = F.pad(relevance.double().cumsum(1).cumsum(2), (1, 0, 1, 0)).flatten(1)
    stride = relevance.shape[2] + 1

    def corner(y: Tensor, x: Tensor) -> Tensor:
        return sat.gather(1, (y * stride + x).flatten(1)).view(y.shape)

    sums = corner(y2, x2) - corner(y1, x2) - corner(y2, x1) + corner(y1, x1)
    area = ((y2 - y1) * (x2 - x1)).clamp_min(1)
    grows = sums / area >= expand_threshold * scores[..., None].double()
    grows[..., 0] = True  # the s_min box is always kept
    chosen = (grows.to(torch.uint8).cumprod(-1).sum(-1, keepdim=True) - 1)[..., None]  # [B, K, 1, 1]
    boxes = torch.stack([x1, y1, x2, y2], -1)  # [B, K, S, 4]
    return boxes.gather(2, chosen.expand(-1, -1, 1, 4)).squeeze(2).float()


def suppress_overlaps(rois: RoiSet, nms_threshold: float) -> RoiSet:
    """Non-maximum suppression per map (torchvision ``batched_nms``), keeping the rank order of
    ``rois``; survivors are packed to the front of each row, the rest become padding."""
    batch, slots = rois.valid.shape
    device = rois.boxes.device
    candidates = rois.valid.flatten().nonzero().squeeze(1)
    # Strictly decreasing priorities: the (already score-sorted, tie-broken) rank order.
    priority = torch.arange(slots, 0, -1, device=device, dtype=torch.float32).repeat(batch)
    image = torch.arange(batch, device=device).repeat_interleave(slots)
    kept = batched_nms(
        rois.boxes.flatten(0, 1)[candidates], priority[candidates], image[candidates], nms_threshold + NMS_TIE_MARGIN
    )
    valid = torch.zeros(batch * slots, dtype=torch.bool, device=device)
    valid[candidates[kept]] = True
    valid = valid.view(batch, slots)

    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices  # survivors first, rank order
    valid = valid.gather(1, order)
    return RoiSet(
        boxes=torch.where(valid[..., None], rois.boxes.gather(1, order[..., None].expand(-1, -1, 4)), 0.0),
        scores=torch.where(valid, rois.scores.gather(1, order), 0.0),
        valid=valid,
        cell_hw=rois.cell_hw,
        anchors=torch.where(valid[..., None], rois.anchors.gather(1, order[..., None].expand(-1, -1, 2)), 0),
    )


def check_roi_inputs(
    maps: Tensor,
    grid_hw: Tensor,
    k: int,
    s_min: int,
    s_max: int,
    s_dist: float,
    expand_threshold: float,
    nms_threshold: float,
    smooth_sigma: float | None = None,
    downsample: int = 1,
    valid_mask: Tensor | None = None,
) -> None:
    """Raise ``ValueError`` (naming the offending value, shape or map) on bad inputs."""
    if maps.dim() != 3 or not maps.is_floating_point():
        raise ValueError(f"maps must be a float tensor [B, Hmax, Wmax], got {maps.dtype} {tuple(maps.shape)}")
    batch, h_max, w_max = maps.shape
    if min(batch, h_max, w_max) == 0:
        raise ValueError(f"maps has an empty dimension: {tuple(maps.shape)}")
    if grid_hw.shape != (batch, 2) or grid_hw.is_floating_point() or grid_hw.dtype == torch.bool:
        raise ValueError(
            f"grid_hw must be an integer tensor [B={batch}, 2], got {grid_hw.dtype} {tuple(grid_hw.shape)}"
        )
    if valid_mask is not None:
        if valid_mask.shape != maps.shape or valid_mask.dtype != torch.bool:
            raise ValueError(
                f"valid_mask must be a bool tensor of the maps' shape {tuple(maps.shape)}, "
                f"got {valid_mask.dtype} {tuple(valid_mask.shape)}"
            )
        if valid_mask.device != maps.device:
            raise ValueError(f"valid_mask is on {valid_mask.device} but maps on {maps.device}")
    for name, value in (("k", k), ("s_min", s_min), ("s_max", s_max), ("downsample", downsample)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 1 <= s_min <= s_max:
        raise ValueError(f"need 1 <= s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    if not (math.isfinite(s_dist) and s_dist >= 0):
        raise ValueError(f"s_dist must be a finite number >= 0, got {s_dist}")
    if not math.isfinite(expand_threshold):
        raise ValueError(f"expand_threshold must be finite, got {expand_threshold}")
    if not 0.0 <= nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold must lie in [0, 1], got {nms_threshold}")
    if smooth_sigma is not None and not (math.isfinite(smooth_sigma) and smooth_sigma > 0):
        raise ValueError(f"smooth_sigma must be > 0 or None, got {smooth_sigma}")
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")

    # One host synchronisation for all data checks; the details only on failure.
    grid = grid_hw.to(maps.device).long()
    bad_grid = (grid.min(1).values < 1) | (grid[:, 0] > h_max) | (grid[:, 1] > w_max)
    rows = torch.arange(h_max, device=maps.device)[None, :, None]
    cols = torch.arange(w_max, device=maps.device)[None, None, :]
    inside = (rows < grid[:, 0, None, None]) & (cols < grid[:, 1, None, None])
    bad_values = (inside & ~torch.isfinite(maps)).flatten(1).any(1)
    if bool((bad_grid | bad_values).any()):
        if bool(bad_grid.any()):
            b = int(bad_grid.nonzero()[0])
            h, w = (int(x) for x in grid[b])
            raise ValueError(
                f"map {b}: grid_hw = ({h}, {w}) must satisfy 1 <= h <= Hmax={h_max} and 1 <= w <= Wmax={w_max}"
            )
        b = int(bad_values.nonzero()[0])
        raise ValueError(f"map {b} has NaN or infinite values inside its grid")
