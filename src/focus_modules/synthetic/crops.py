"""Crops of a scene with random context around its objects (zoomed-in views).

Boxes are pixel-edge xyxy in the scene's image; ``scene.crop(box)`` gives the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .records import Box


def context_crop_box(
    boxes: Sequence[Box],
    image_size: tuple[int, int],
    rng: np.random.Generator,
    context: tuple[float, float] = (2.0, 8.0),
    min_side: int = 32,
) -> Box:
    """A square-ish crop that contains every box, with random context around them.

    The crop's side is the union box's longer side times a factor drawn from ``context`` (at
    least ``min_side``, at most the image), and the union sits at a random place inside it.

    Args:
        boxes: pixel-edge xyxy boxes the crop must contain (at least one).
        image_size: ``(width, height)`` of the image.
        rng: generator (consumed).
        context: range of the crop side / union side ratio (both >= 1).
        min_side: smallest crop side in pixels.

    Returns:
        Pixel-edge xyxy crop box inside the image that contains every box.
    """
    if not boxes:
        raise ValueError("context_crop_box needs at least one box")
    if not 1 <= context[0] <= context[1]:
        raise ValueError(f"context must be (min, max) with 1 <= min <= max, got {context}")
    width, height = image_size
    ux1, uy1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    ux2, uy2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    if not (0 <= ux1 < ux2 <= width and 0 <= uy1 < uy2 <= height):
        raise ValueError(f"boxes {list(boxes)} do not lie inside the {width}x{height} image")
    side = max(min_side, round(max(ux2 - ux1, uy2 - uy1) * rng.uniform(*context)))
    crop_w, crop_h = min(width, max(side, ux2 - ux1)), min(height, max(side, uy2 - uy1))
    # The crop's left edge may range over [ux2 - crop_w, ux1], limited to the image.
    x1 = int(rng.integers(max(0, ux2 - crop_w), min(ux1, width - crop_w) + 1))
    y1 = int(rng.integers(max(0, uy2 - crop_h), min(uy1, height - crop_h) + 1))
    return (x1, y1, x1 + crop_w, y1 + crop_h)
