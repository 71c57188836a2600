"""Sliding-window relevance maps: window layout and stitching of window maps into one map.

A global-view model builds its relevance map on a fixed grid over the whole image (LLaVA-1.5:
24 x 24), so on a 4K-8K image a small object is a fraction of one cell. The windowed relevance
phase (``FocusConfig.window_size``) instead runs the existence prompt on overlapping square
crops ("windows") of the original image, each at the model's own resolution, and stitches the
windows' maps into one map on a finer grid of the whole image. This module holds the
arithmetic; the wrapper runs the prompts.

**Layout** (:func:`window_boxes`). Square windows of side ``side`` pixels; along an axis of
length ``L > side`` there are ``n = ceil((L - side) / (side * (1 - overlap))) + 1`` windows whose
starts are spread evenly from ``0`` to ``L - side`` (rounded to whole pixels), so the first and
last windows touch the image's borders and neighbours overlap by at least ``overlap``. An axis
no longer than ``side`` gets one window spanning it (the window is then not square; the
model's own preprocessing, e.g. LLaVA's padding to a square, applies to it as to any crop).
With ``overlap = 0.5`` every pixel lies in the central half of some window (per axis).

**Stitched grid** (:func:`stitched_grid`). Each window's map comes with its
:class:`~focus_modules.ops.boxes.CellGeometry` in pixels of the ORIGINAL image (the crop's
geometry shifted by the crop's corner). The stitched map of a set of windows has the finest
cell size among them (per axis) and its origin at the smallest of their origins (per axis;
``(0, 0)`` unless the model pads a window, as LLaVA pads a window narrower than ``side``), and
enough cells to cover the image: ``ceil((image_size - origin) / cell)`` per axis. Its cells are
whole cells of the image, so :func:`~focus_modules.ops.boxes.cells_to_pixels` and
:func:`~focus_modules.ops.boxes.image_cell_mask` apply to it unchanged.

**Stitching** (:func:`stitch_maps`, :func:`stitch_maps_reference`), per stitched map:

1. Each window's map (a distribution: it sums to 1 over the window's cells) is divided by its
   mean over the window's valid cells, so that 1 means "as relevant as the window's average
   cell". Windows with the same number of valid cells are all scaled by the same constant
   (the combined map is then the same as without this step, after step 4); windows with
   fewer valid cells (a window cut short by the image or padded by the model, or the grids of
   native-resolution models, which depend on the crop's size) would otherwise weigh more per
   cell only because their distribution is spread over fewer cells. Min-max normalising each
   window instead would lift every empty window's strongest cell to the height of the
   target's peak, so the per-window scale is kept.
2. Every stitched cell reads, from each window, the window cell that contains the stitched
   cell's centre (nearest-neighbour resampling), when that cell lies inside the window's grid
   and is valid. Where a window's cells are exactly stitched cells (the same cell size, its
   origin on the stitched grid: every window of a ``side`` divisible by the model's grid side,
   placed at a multiple of the cell size), this is an exact index shift; otherwise a window
   cell is attributed to the stitched cells whose centres it contains (an error below half a
   stitched cell).
3. Overlaps combine by ``"mean"`` (the average over the windows covering the cell) or
   ``"max"`` (the largest). Cells no window covers are 0 and have coverage 0.
4. The map is divided by its sum, so it sums to 1 over its cells, as a relevance map does.

Arithmetic is float64 (the maps are small); the result is float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from focus_modules.config import WINDOW_COMBINES as COMBINES  # how the windows of one cell combine
from focus_modules.ops.boxes import CellGeometry
from focus_modules.ops.relevance_map import guard_denominator

# Relative slack when counting the cells that cover an image extent: an extent of exactly n
# cells, computed as 64.00000000001 cells by floating point, is n cells, not n + 1.
CELL_COUNT_RTOL = 1e-9


class StitchedMaps(NamedTuple):
    """Stitched relevance maps.

    Attributes:
        maps: ``[B, Hmax, Wmax]`` float32; map ``b`` sums to 1 over its ``out_hw[b]`` cells and
            is 0 outside them and where no window covers a cell.
        coverage: ``[B, Hmax, Wmax]`` long, the number of windows whose valid cells cover each
            cell (0 outside each map).
    """

    maps: Tensor
    coverage: Tensor


def window_starts(length: int, side: int, overlap: float) -> list[int]:
    """Start pixels of the windows along one axis of ``length`` pixels (see module docstring)."""
    if length <= side:
        return [0]
    stride = side * (1.0 - overlap)
    count = math.ceil((length - side) / stride) + 1
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def window_boxes(image_size: tuple[int, int], side: int, overlap: float) -> Tensor:
    """The sliding windows over an image.

    Args:
        image_size: ``(width, height)`` of the image in pixels.
        side: window side in pixels (``>= 1``).
        overlap: least overlap of neighbouring windows, a fraction of ``side`` in ``[0, 1)``.

    Returns:
        ``[n_y * n_x, 4]`` long ``(x1, y1, x2, y2)`` pixel boxes (``x2``/``y2`` exclusive), row by
        row from the top-left window; each lies inside the image.
    """
    width, height = image_size
    if side < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"need side >= 1 and overlap in [0, 1), got side={side}, overlap={overlap}")
    if width < 1 or height < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    xs, ys = window_starts(width, side, overlap), window_starts(height, side, overlap)
    return torch.tensor([(x, y, min(x + side, width), min(y + side, height)) for y in ys for x in xs], dtype=torch.long)


def window_count(image_size: tuple[int, int], side: int, overlap: float) -> int:
    """Number of windows :func:`window_boxes` lays over an image: ``n_x * n_y``."""
    width, height = image_size
    return len(window_starts(width, side, overlap)) * len(window_starts(height, side, overlap))


def stitched_grid(windows: CellGeometry, owner: Tensor, num_maps: int) -> tuple[CellGeometry, Tensor]:
    """The grid of each stitched map, from the geometries of its windows.

    Args:
        windows: per window, where its map's cells lie in the original image (fields ``[P, 2]``).
        owner: ``[P]`` long, the stitched map (``0..num_maps-1``) each window belongs to; every
            map needs at least one window, and all windows of a map one image size.
        num_maps: ``B``.

    Returns:
        the stitched maps' :class:`CellGeometry` (fields ``[B, 2]``: the smallest window origin
        and cell size per axis, the image size) and their ``[B, 2]`` long ``(h, w)``.
    """
    origin, cell, size = (torch.as_tensor(f, dtype=torch.float64) for f in windows)
    owner = torch.as_tensor(owner, dtype=torch.long)
    counts = torch.bincount(owner, minlength=num_maps)
    if owner.numel() != origin.shape[0] or counts.numel() != num_maps or bool((counts == 0).any()):
        raise ValueError(f"owner must give every window one of {num_maps} maps, each map at least one window")
    index = owner[:, None].expand(-1, 2)
    inf = torch.full((num_maps, 2), math.inf, dtype=torch.float64)
    grid_origin = inf.scatter_reduce(0, index, origin, "amin")
    grid_cell = inf.scatter_reduce(0, index, cell, "amin")
    image_size = torch.zeros((num_maps, 2), dtype=torch.float64).index_copy(0, owner, size)
    if not torch.equal(image_size[owner], size):
        raise ValueError("the windows of one stitched map must share one image_size")
    cells = (image_size - grid_origin) / grid_cell
    out_wh = torch.ceil(cells * (1 - CELL_COUNT_RTOL)).long().clamp_min(1)
    return CellGeometry(grid_origin, grid_cell, image_size), out_wh.flip(-1)


def _source_index(cell: Tensor, grid_origin: Tensor, grid_cell: Tensor, origin: Tensor, size: Tensor) -> Tensor:
    """Index of the window cell (origin ``origin``, size ``size``) containing the centre of
    stitched cell ``cell`` (grid origin ``grid_origin``, size ``grid_cell``); one axis, float64.
    Both stitching paths call this, so they agree on every index."""
    return torch.floor((grid_origin + (cell + 0.5) * grid_cell - origin) / size).long()


def _window_scale(maps: Tensor, grid_hw: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Step 1: ``[P, Hmax, Wmax]`` float64 maps divided by their mean over their valid cells,
    and the ``[P, Hmax, Wmax]`` bool valid cells (inside each grid and ``valid``)."""
    num, h_max, w_max = maps.shape
    rows = torch.arange(h_max, device=maps.device)
    cols = torch.arange(w_max, device=maps.device)
    inside = (rows[None, :, None] < grid_hw[:, 0, None, None]) & (cols[None, None, :] < grid_hw[:, 1, None, None])
    if valid is not None:
        inside = inside & valid.bool()
    values = torch.where(inside, maps.double(), 0.0)
    mean = values.sum((1, 2)) / inside.sum((1, 2)).clamp_min(1)
    return values / guard_denominator(mean)[:, None, None], inside


def _finish(total: Tensor, coverage: Tensor, out_hw: Tensor) -> StitchedMaps:
    """Step 4: zero outside each map and where uncovered, divide by the sum; float32."""
    _, h_max, w_max = total.shape
    rows = torch.arange(h_max, device=total.device)
    cols = torch.arange(w_max, device=total.device)
    inside = (rows[None, :, None] < out_hw[:, 0, None, None]) & (cols[None, None, :] < out_hw[:, 1, None, None])
    covered = inside & (coverage > 0)
    total = torch.where(covered, total, 0.0)
    maps = total / guard_denominator(total.sum((1, 2)))[:, None, None]
    return StitchedMaps(maps.float(), torch.where(inside, coverage, 0))


def _check(maps, grid_hw, windows, valid, owner, grid, out_hw, combine) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    if maps.dim() != 3 or not maps.is_floating_point():
        raise ValueError(f"maps must be a float [P, Hmax, Wmax] tensor, got {maps.dtype} {tuple(maps.shape)}")
    num = maps.shape[0]
    owner = torch.as_tensor(owner, dtype=torch.long, device=maps.device)
    grid_hw = torch.as_tensor(grid_hw, dtype=torch.long, device=maps.device)
    out_hw = torch.as_tensor(out_hw, dtype=torch.long, device=maps.device)
    if owner.shape != (num,) or grid_hw.shape != (num, 2) or windows.origin.shape != (num, 2):
        raise ValueError(
            f"need one owner, grid_hw and geometry per window map ({num}), got {tuple(owner.shape)}, "
            f"{tuple(grid_hw.shape)}, {tuple(windows.origin.shape)}"
        )
    if valid is not None and valid.shape != maps.shape:
        raise ValueError(f"valid must have the maps' shape {tuple(maps.shape)}, got {tuple(valid.shape)}")
    if out_hw.dim() != 2 or out_hw.shape[1] != 2 or grid.origin.shape != out_hw.shape:
        raise ValueError(
            f"grid and out_hw must describe [B, 2] maps, got {tuple(grid.origin.shape)}, {tuple(out_hw.shape)}"
        )
    if num and (int(owner.min()) < 0 or int(owner.max()) >= out_hw.shape[0]):
        raise ValueError(f"owner must lie in 0..{out_hw.shape[0] - 1}")
    return owner, grid_hw, out_hw, torch.Size((out_hw.shape[0], int(out_hw[:, 0].max()), int(out_hw[:, 1].max())))


def stitch_maps(
    maps: Tensor,
    grid_hw: Tensor,
    windows: CellGeometry,
    owner: Tensor,
    grid: CellGeometry,
    out_hw: Tensor,
    valid: Tensor | None = None,
    combine: str = "max",
) -> StitchedMaps:
    """Stitch window relevance maps into maps of whole images (module docstring, steps 1-4).

    The vectorised path: every window reads the stitched cells of its own extent (a
    ``[P, Hw, Ww]`` block, ``Hw x Ww`` the most stitched cells one window spans) and the
    values are summed (``scatter_add``) or maximised (``scatter_reduce``) into the maps.
    :func:`stitch_maps_reference` is the same computation as a loop over windows.

    Args:
        maps: ``[P, Hmax, Wmax]`` window maps (any float dtype; as ``relevance_map`` returns
            them, each summing to 1 over its grid).
        grid_hw: ``[P, 2]`` ``(h, w)`` of each window map.
        windows: per window, where its cells lie in the original image (fields ``[P, 2]``).
        owner: ``[P]`` long, the stitched map each window belongs to.
        grid: the stitched maps' geometry (fields ``[B, 2]``), e.g. from :func:`stitched_grid`.
        out_hw: ``[B, 2]`` ``(h, w)`` of each stitched map.
        valid: ``[P, Hmax, Wmax]`` bool, False for window cells that must not be read (a
            model's padding); ``None``: every cell inside each grid.
        combine: ``"max"`` or ``"mean"`` over the windows covering a cell.

    Returns:
        :class:`StitchedMaps` (``[B, max h, max w]`` maps and coverage).
    """
    owner, grid_hw, out_hw, shape = _check(maps, grid_hw, windows, valid, owner, grid, out_hw, combine)
    scaled, inside = _window_scale(maps, grid_hw, valid)
    device = maps.device
    origin, cell = windows.origin.to(device, torch.float64), windows.cell_size.to(device, torch.float64)
    g_origin = grid.origin.to(device, torch.float64)[owner]
    g_cell = grid.cell_size.to(device, torch.float64)[owner]
    # First stitched cell (per axis) whose centre may lie in each window, one cell early for
    # safety (the mask below decides), and the largest span of any window in stitched cells.
    first = torch.floor((origin - g_origin) / g_cell - 0.5).long() - 1  # [P, 2] (x, y)
    extent = grid_hw.flip(-1).double() * cell  # [P, 2] pixels (w, h)
    span = int(torch.ceil(extent / g_cell).max()) + 3 if len(owner) else 1
    steps = torch.arange(span, device=device)
    stitched = first[:, None, :] + steps[None, :, None]  # [P, span, 2] stitched col / row per axis
    source = torch.stack(
        [
            _source_index(
                stitched[..., a], g_origin[:, None, a], g_cell[:, None, a], origin[:, None, a], cell[:, None, a]
            )
            for a in (0, 1)
        ],
        -1,
    )  # [P, span, 2] window col / row
    limits_out = out_hw.flip(-1)[owner][:, None, :]  # (w, h) of the stitched map
    limits_in = grid_hw.flip(-1)[:, None, :]  # (w, h) of the window map
    ok = (stitched >= 0) & (stitched < limits_out) & (source >= 0) & (source < limits_in)  # [P, span, 2]
    hit = ok[:, :, None, 1] & ok[:, None, :, 0]  # [P, span rows, span cols]
    w_max = maps.shape[2]
    src_row, src_col = source[:, :, None, 1].clamp(0, maps.shape[1] - 1), source[:, None, :, 0].clamp(0, w_max - 1)
    flat_src = (src_row * w_max + src_col).reshape(len(owner), -1)
    hit = hit & inside.reshape(len(owner), -1).gather(1, flat_src).view_as(hit)
    values = scaled.reshape(len(owner), -1).gather(1, flat_src).view_as(hit)
    _, h_out, w_out = shape
    dst = owner[:, None, None] * (h_out * w_out) + stitched[:, :, None, 1] * w_out + stitched[:, None, :, 0]
    dst, values, hit = dst[hit], values[hit], hit[hit]
    coverage = torch.zeros(shape.numel(), dtype=torch.long, device=device).scatter_add_(0, dst, hit.long())
    if combine == "mean":
        total = torch.zeros(shape.numel(), dtype=torch.float64, device=device).scatter_add_(0, dst, values)
        total = total / coverage.clamp_min(1)
    else:
        total = torch.full((shape.numel(),), -math.inf, dtype=torch.float64, device=device)
        total = total.scatter_reduce(0, dst, values, "amax")
    return _finish(total.view(shape), coverage.view(shape), out_hw)


def stitch_maps_reference(
    maps: Tensor,
    grid_hw: Tensor,
    windows: CellGeometry,
    owner: Tensor,
    grid: CellGeometry,
    out_hw: Tensor,
    valid: Tensor | None = None,
    combine: str = "max",
) -> StitchedMaps:
    """:func:`stitch_maps` as a readable loop over windows (the oracle of the vectorised path);
    same arguments and result."""
    owner, grid_hw, out_hw, shape = _check(maps, grid_hw, windows, valid, owner, grid, out_hw, combine)
    scaled, inside = _window_scale(maps, grid_hw, valid)
    total = torch.zeros(shape, dtype=torch.float64, device=maps.device)
    best = torch.full(shape, -math.inf, dtype=torch.float64, device=maps.device)
    coverage = torch.zeros(shape, dtype=torch.long, device=maps.device)
    for p in range(maps.shape[0]):
        b = int(owner[p])
        h, w = grid_hw[p].tolist()
        out_h, out_w = out_hw[b].tolist()
        # the window cell under the centre of every stitched cell of map b, per axis
        col = _source_index(
            torch.arange(out_w, device=maps.device).double(),
            grid.origin[b, 0].item(),
            grid.cell_size[b, 0].item(),
            windows.origin[p, 0].item(),
            windows.cell_size[p, 0].item(),
        )
        row = _source_index(
            torch.arange(out_h, device=maps.device).double(),
            grid.origin[b, 1].item(),
            grid.cell_size[b, 1].item(),
            windows.origin[p, 1].item(),
            windows.cell_size[p, 1].item(),
        )
        in_window = ((row >= 0) & (row < h))[:, None] & ((col >= 0) & (col < w))[None, :]
        row_c, col_c = row.clamp(0, h - 1), col.clamp(0, w - 1)
        read = in_window & inside[p][row_c[:, None], col_c[None, :]]
        value = scaled[p][row_c[:, None], col_c[None, :]]
        total[b, :out_h, :out_w] += torch.where(read, value, 0.0)
        best[b, :out_h, :out_w] = torch.where(
            read, torch.maximum(best[b, :out_h, :out_w], value), best[b, :out_h, :out_w]
        )
        coverage[b, :out_h, :out_w] += read.long()
    combined = total / coverage.clamp_min(1) if combine == "mean" else best
    return _finish(combined, coverage, out_hw)
