"""ViCrop's crop-box selection and high-resolution tiling ("MLLMs know where to look",
Zhang et al., ICLR 2025; ``bbox_from_att_image_adaptive`` and ``high_res_split_threshold`` of
its public code), on torch tensors.

Box selection (:func:`vicrop_box`): for each ratio ``r`` in :data:`CROP_RATIOS`, a window of
``int(bbox_size * r / cell)`` cells per axis slides over the map with stride 1; the window of
largest sum is that ratio's candidate, scored by its sharpness ``(max - mean of the sums of the
windows one step left, right, up and down) / window area``; the sharpest ratio wins and the
crop is the ``bbox_size * r`` square centred on its window, shifted into the image. A window
as large as the whole map at ``r = 1`` gives the whole image; at larger ``r`` that ratio is
skipped. :func:`vicrop_box_reference` is the same rule as loops, mirroring the public code line
by line; :func:`vicrop_box` computes every window sum at once from a summed-area table.

Where this differs from the public code, and why:

* The map's cells are ``cell_size`` pixels (the public code derives them from the image size
  and the map shape, which is the same when the map covers exactly the image).
* A window is at least one cell per axis (the public code gets an empty window, all sums 0
  and a NaN score, when a cell is larger than ``bbox_size * r``).
* Sums are float64 (the public code sums the float32 map in float32).

Ties are broken as the public code breaks them: the first window in column-major order (its
loops run over x, then y) and the first ratio.

Tiling (:func:`vicrop_tiles`): ``rows = ceil(H / threshold)`` and ``cols = int(rows * W / H)``
tiles of ``ceil(W / cols) x ceil(H / rows)`` pixels, row-major; tiles of the last row and column
reach past the image. The public code gets ``cols = 0`` for a portrait image whose
``rows * W / H < 1`` (e.g. 600 x 900: rows 1, cols int(0.67) = 0) and then divides by zero;
here ``cols`` is at least 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from focus_modules.adapters.views import Box

# Crop sides as multiples of ``bbox_size`` that the selection tries.
CROP_RATIOS = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
# Images taller than this many pixels are split into tiles (per tile one attention map).
TILE_THRESHOLD = 1024


def vicrop_tiles(width: int, height: int, threshold: int = TILE_THRESHOLD) -> tuple[int, int, int, int]:
    """How ViCrop's high-resolution mode tiles a ``width x height`` image.

    Returns:
        ``(rows, cols, tile_w, tile_h)``: ``rows = ceil(height / threshold)``,
        ``cols = max(1, int(rows * width / height))`` and the tile size
        ``(ceil(width / cols), ceil(height / rows))``.
    """
    if width < 1 or height < 1 or threshold < 1:
        raise ValueError(f"need a non-empty image and a positive threshold, got {width}x{height}, {threshold}")
    rows = math.ceil(height / threshold)
    cols = max(1, int(rows * width / height))
    return rows, cols, math.ceil(width / cols), math.ceil(height / rows)


def tile_boxes(rows: int, cols: int, tile_w: int, tile_h: int) -> list[tuple[int, int, int, int]]:
    """The ``rows * cols`` tiles as integer pixel boxes, row-major (the last row and column may
    reach past the image)."""
    return [(c * tile_w, r * tile_h, (c + 1) * tile_w, (r + 1) * tile_h) for r in range(rows) for c in range(cols)]


def stitch_tiles(maps: Tensor, rows: int, cols: int) -> Tensor:
    """``[rows * cols, h, w]`` per-tile maps (row-major tiles) -> the ``[rows * h, cols * w]``
    map of the whole tiled area."""
    if maps.dim() != 3 or maps.shape[0] != rows * cols:
        raise ValueError(f"expected [{rows * cols}, h, w] tile maps, got {tuple(maps.shape)}")
    _, h, w = maps.shape
    return maps.reshape(rows, cols, h, w).permute(0, 2, 1, 3).reshape(rows * h, cols * w)


def _check(att_map: Tensor, cell_size: Sequence[float], image_size: Sequence[float], bbox_size: float) -> None:
    if att_map.dim() != 2 or att_map.numel() == 0:
        raise ValueError(f"att_map must be a non-empty [h, w] map, got {tuple(att_map.shape)}")
    if min(cell_size) <= 0 or min(image_size) <= 0 or bbox_size <= 0:
        raise ValueError(
            f"cell_size, image_size and bbox_size must be positive, got {cell_size}, {image_size}, {bbox_size}"
        )


def _window_cells(cell_size: Sequence[float], bbox_size: float, ratio: float, h: int, w: int) -> tuple[int, int]:
    """Cells ``(x, y)`` of a ``bbox_size * ratio`` window: at least 1, at most the map."""
    return (
        min(max(int(bbox_size * ratio / cell_size[0]), 1), w),
        min(max(int(bbox_size * ratio / cell_size[1]), 1), h),
    )


def _centred_box(
    position: tuple[int, int],
    cells: tuple[int, int],
    side: float,
    cell_size: Sequence[float],
    image_size: Sequence[float],
) -> Box:
    """The ``side x side`` crop centred on the window at cell ``position`` (x, y) of
    ``cells`` cells, shifted into the image (the public code's arithmetic, ints included)."""
    half = side // 2
    box = []
    for axis in (0, 1):
        centre = int(position[axis] * cell_size[axis] + cell_size[axis] * cells[axis] / 2)
        centre = max(centre, half)
        centre = min(centre, image_size[axis] - half)
        box.append((max(0.0, centre - half), min(float(image_size[axis]), centre + half)))
    (x1, x2), (y1, y2) = box
    return (float(x1), float(y1), float(x2), float(y2))


def vicrop_box_reference(
    att_map: Tensor,
    cell_size: Sequence[float],
    image_size: Sequence[float],
    bbox_size: float,
    ratios: Sequence[float] = CROP_RATIOS,
) -> Box:
    """:func:`vicrop_box` as loops over ratios and windows (the oracle of the tests)."""
    _check(att_map, cell_size, image_size, bbox_size)
    att = att_map.detach().to("cpu", torch.float64)
    h, w = att.shape
    candidates = []  # (sharpness, position, cells, ratio)
    for ratio in ratios:
        bx, by = _window_cells(cell_size, bbox_size, ratio, h, w)
        if w - bx < 1 and h - by < 1:
            if ratio == ratios[0]:
                return (0.0, 0.0, float(image_size[0]), float(image_size[1]))
            continue
        sums = torch.zeros(h - by + 1, w - bx + 1, dtype=torch.float64)
        best, position = -math.inf, (0, 0)
        for x in range(w - bx + 1):
            for y in range(h - by + 1):
                sums[y, x] = att[y : y + by, x : x + bx].sum()
                if sums[y, x] > best:
                    best, position = float(sums[y, x]), (x, y)
        x, y = position
        neighbours = []
        if x > 0:
            neighbours.append(float(sums[y, x - 1]))
        if x < sums.shape[1] - 1:
            neighbours.append(float(sums[y, x + 1]))
        if y > 0:
            neighbours.append(float(sums[y - 1, x]))
        if y < sums.shape[0] - 1:
            neighbours.append(float(sums[y + 1, x]))
        sharpness = (best - sum(neighbours) / len(neighbours)) / (bx * by)
        candidates.append((sharpness, position, (bx, by), ratio))
    chosen = candidates[0]
    for candidate in candidates[1:]:
        if candidate[0] > chosen[0]:
            chosen = candidate
    _, position, cells, ratio = chosen
    return _centred_box(position, cells, bbox_size * ratio, cell_size, image_size)


def vicrop_box(
    att_map: Tensor,
    cell_size: Sequence[float],
    image_size: Sequence[float],
    bbox_size: float,
    ratios: Sequence[float] = CROP_RATIOS,
) -> Box:
    """ViCrop's adaptive crop box on one attention map.

    Args:
        att_map: ``[h, w]`` map (any float dtype, any device); cell ``(row, col)`` covers
            ``[col * cell_w, (col + 1) * cell_w) x [row * cell_h, (row + 1) * cell_h)``.
        cell_size: ``(cell_w, cell_h)`` pixels of one cell.
        image_size: ``(width, height)`` of the image the box is clamped to.
        bbox_size: the crop side at ratio 1 (pixels).
        ratios: the crop sides tried, as multiples of ``bbox_size``, in order (ties go to the
            first).

    Returns:
        ``(x1, y1, x2, y2)`` float pixels: a square of side ``2 * floor(bbox_size * r / 2)``
        centred on the chosen window, shifted into the image, cut to the image where it is
        larger.
    """
    _check(att_map, cell_size, image_size, bbox_size)
    att = att_map.detach().to("cpu", torch.float64)
    h, w = att.shape
    table = torch.zeros(h + 1, w + 1, dtype=torch.float64)
    table[1:, 1:] = att.cumsum(0).cumsum(1)
    best = None  # (sharpness, position, cells, ratio)
    for ratio in ratios:
        bx, by = _window_cells(cell_size, bbox_size, ratio, h, w)
        if w - bx < 1 and h - by < 1:
            if ratio == ratios[0]:
                return (0.0, 0.0, float(image_size[0]), float(image_size[1]))
            continue
        # sums[y, x] = sum of att[y:y+by, x:x+bx]
        sums = table[by:, bx:] - table[:-by, bx:] - table[by:, :-bx] + table[:-by, :-bx]
        flat = int(sums.T.argmax())  # column-major: the public code's loop order
        x, y = divmod(flat, sums.shape[0])
        padded = torch.full((sums.shape[0] + 2, sums.shape[1] + 2), math.nan, dtype=torch.float64)
        padded[1:-1, 1:-1] = sums
        around = torch.stack([padded[y + 1, x], padded[y + 1, x + 2], padded[y, x + 1], padded[y + 2, x + 1]])
        sharpness = float((sums[y, x] - around.nanmean()) / (bx * by))
        if best is None or sharpness > best[0]:
            best = (sharpness, (x, y), (bx, by), ratio)
    _, position, cells, ratio = best
    return _centred_box(position, cells, bbox_size * ratio, cell_size, image_size)
