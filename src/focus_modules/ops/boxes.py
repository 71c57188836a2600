"""Map cells <-> pixels of the original image.

A relevance map's grid lies over the model input, which is the original image resized and
possibly padded. Per image, that is an affine map per axis, described by :class:`CellGeometry`
in pixels of the ORIGINAL image: cell ``(col, row)`` covers
``[origin_x + col * cell_w, origin_x + (col + 1) * cell_w) x [origin_y + row * cell_h, ...)``.
Padding shows up as a negative origin (or cells past the image's far edge). Two constructors
cover the usual preprocessing; any other layout (a crop, a letterbox with a different canvas)
is a :class:`CellGeometry` built directly from its origin and cell size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

# (x, y) / (w, h) / (h, w) pairs: a [..., 2] tensor or nested sequences like [[640, 480], ...].
Pairs = Tensor | Sequence[Sequence[float]]


def _pairs(values: Pairs, name: str) -> Tensor:
    pairs = torch.as_tensor(values, dtype=torch.float64)
    if pairs.dim() == 0 or pairs.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [..., 2], got {tuple(pairs.shape)}")
    return pairs


def _as_xyxy(field: Tensor, boxes: Tensor) -> Tensor:
    """``[..., 2]`` ``(x, y)`` -> ``[..., 1, 4]`` ``(x, y, x, y)``, broadcastable against ``boxes``."""
    return torch.cat([field, field], -1).to(boxes.device)[..., None, :]


class CellGeometry(NamedTuple):
    """Where the cells of a map lie in the original image (float64, pixels of the original image).

    Attributes:
        origin: ``[..., 2]`` ``(x, y)`` of the grid's top-left corner; negative where the model
            input pads the image before it.
        cell_size: ``[..., 2]`` ``(w, h)`` of one cell.
        image_size: ``[..., 2]`` ``(width, height)`` of the original image (PIL's ``.size``
            order); pixel boxes are clipped to it.
    """

    origin: Tensor
    cell_size: Tensor
    image_size: Tensor

    @classmethod
    def stretched(cls, image_size: Pairs, grid_hw: Pairs, downsample: int = 1) -> CellGeometry:
        """The grid covers the whole image, each axis scaled on its own (e.g. Qwen2.5-VL's
        resize to a multiple of the patch size; LLaVA-OneVision's unpadded local grid).

        Args:
            image_size: ``[B, 2]`` ``(width, height)`` of each original image.
            grid_hw: ``[B, 2]`` ``(h, w)`` of each map BEFORE downsampling (``grid_hw`` of
                :func:`~focus_modules.functional.propose_rois`, not ``RoiSet.cell_hw``).
            downsample: the proposals' downsampling factor: a cell of the boxes spans
                ``downsample`` map cells (a partial last cell is clipped to the image).
        """
        image_size = _pairs(image_size, "image_size")
        grid_wh = _pairs(grid_hw, "grid_hw").flip(-1)
        return cls(torch.zeros_like(image_size), image_size / grid_wh * downsample, image_size)

    @classmethod
    def padded_square(cls, image_size: Pairs, grid_hw: Pairs, downsample: int = 1) -> CellGeometry:
        """The image is centred in a square of side ``max(width, height)``, pasted at
        ``((side - width) // 2, (side - height) // 2)`` (LLaVA's ``expand2square``), and the
        grid covers the square. Arguments as in :meth:`stretched`."""
        image_size = _pairs(image_size, "image_size")
        side = image_size.amax(-1, keepdim=True)
        grid_wh = _pairs(grid_hw, "grid_hw").flip(-1)
        origin = 0.0 - torch.div(side - image_size, 2, rounding_mode="floor")  # 0.0 - : no -0.0
        return cls(origin, side / grid_wh * downsample, image_size)


def cells_to_pixels(boxes: Tensor, geometry: CellGeometry) -> Tensor:
    """Boxes in map cells -> boxes in pixels of the original image, clipped to the image.

    Args:
        boxes: ``[..., K, 4]`` ``(x1, y1, x2, y2)`` in cells, ``x2``/``y2`` exclusive (as in
            ``RoiSet.boxes``).
        geometry: fields of shape ``[..., 2]`` (one row per image; the ``K`` axis is
            broadcast).

    Returns:
        ``[..., K, 4]`` float32 pixel boxes ``(x1, y1, x2, y2)`` with ``0 <= x1 <= x2 <= width``
        and likewise for ``y``. A box lying wholly in padding comes back with zero area; pass
        the padding as ``valid_mask`` to ``propose_rois`` (see :func:`image_cell_mask`) so that
        no ROI does.
    """
    origin, cell, size = (_as_xyxy(field, boxes) for field in geometry)
    pixels = origin + boxes.double() * cell
    return torch.minimum(pixels.clamp_min(0), size).float()


def pixels_to_cells(boxes: Tensor, geometry: CellGeometry) -> Tensor:
    """Boxes in pixels of the original image -> boxes in (fractional) map cells; the exact
    inverse of :func:`cells_to_pixels` for boxes inside the image. Not rounded or clipped.

    Args:
        boxes: ``[..., K, 4]`` ``(x1, y1, x2, y2)`` pixels.
        geometry: fields of shape ``[..., 2]``.

    Returns:
        ``[..., K, 4]`` float32 boxes in cells.
    """
    origin, cell = _as_xyxy(geometry.origin, boxes), _as_xyxy(geometry.cell_size, boxes)
    return ((boxes.double() - origin) / cell).float()


def image_cell_mask(geometry: CellGeometry, grid_hw: Tensor, h_max: int, w_max: int) -> Tensor:
    """Cells whose centre lies inside the image: the ``valid_mask`` that keeps anchors off the
    padding of a padded model input.

    Args:
        geometry: the map's geometry at its own resolution (``downsample=1``), fields ``[B, 2]``.
        grid_hw: ``[B, 2]`` ``(h, w)`` of each map.
        h_max, w_max: the padded map size ``[Hmax, Wmax]`` of the batch.

    Returns:
        ``[B, h_max, w_max]`` bool, False outside the image and outside each grid.
    """
    grid_hw = torch.as_tensor(grid_hw)
    device = grid_hw.device
    centre_x = torch.arange(w_max, device=device, dtype=torch.float64) + 0.5
    centre_y = torch.arange(h_max, device=device, dtype=torch.float64) + 0.5
    origin, cell, size = (field.to(device) for field in geometry)
    x = origin[:, None, 0] + centre_x * cell[:, None, 0]  # [B, Wmax] pixel x of each column's centre
    y = origin[:, None, 1] + centre_y * cell[:, None, 1]
    inside_x = (x >= 0) & (x < size[:, None, 0]) & (centre_x < grid_hw[:, None, 1])
    inside_y = (y >= 0) & (y < size[:, None, 1]) & (centre_y < grid_hw[:, None, 0])
    return inside_y[:, :, None] & inside_x[:, None, :]
