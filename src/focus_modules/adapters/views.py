"""Image helpers shared by adapters: RGB conversion, square padding, crops, and the final
views of global-view models (A.5: best ROI crop, union box, or ROIs pasted on a canvas)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike

import numpy as np
from PIL import Image, ImageOps

Box = tuple[float, float, float, float]

# On a canvas, the empty space between ROIs shrinks to at most this fraction of the largest
# ROI side: the ROIs keep their relative positions and resolution, the background goes.
CANVAS_GAP_FRACTION = 0.1
# Transparent pixels are shown on this neutral grey, as a viewer shows them on its background.
TRANSPARENT_BACKGROUND = (128, 128, 128)
# Grayscale modes whose samples are 16-bit (0..65535); "I" is what 16-bit PNGs open as in older
# Pillow versions.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
EXIF_ORIENTATION = 0x0112


def load_rgb(image) -> Image.Image:
    """A PIL RGB image from a PIL image (any mode: grayscale, 16-bit, RGBA, palette, ...), a
    path, or a ``[H, W]`` / ``[H, W, 1|3|4]`` uint8 array, with colours as a viewer shows them
    (:func:`rgb_as_displayed`). A path is turned upright by its EXIF orientation; a given image
    or array keeps its pixel frame (boxes are reported in it)."""
    if isinstance(image, (str, PathLike)):
        with Image.open(image) as opened:
            return rgb_as_displayed(opened)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f"image arrays must be uint8 [H, W] or [H, W, 1|3|4], got {image.dtype} {image.shape}")
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"images must be PIL images, paths or uint8 arrays, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has an empty size {image.size}")
    return rgb_as_displayed(image, upright=False)  # a given image's pixel frame is the caller's


def rgb_as_displayed(image: Image.Image, upright: bool = True) -> Image.Image:
    """The RGB pixels an image viewer shows for ``image``: its EXIF orientation applied (boxes
    are then in the upright frame; ``upright=False`` keeps the stored frame), 16-bit grayscale
    scaled to 8 bits (not clipped at 255), and transparency composited on a neutral grey (not
    the hidden colour of transparent pixels)."""
    if upright and image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        samples = np.asarray(image).astype(np.float64) / 257.0  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(samples), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255)), rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Pad to a square of side ``max(w, h)``, centred (LLaVA's ``expand2square``); returns the
    square and the ``(left, top)`` offset of the original inside it."""
    width, height = image.size
    side = max(width, height)
    offset = ((side - width) // 2, (side - height) // 2)
    if width == height:
        return image, offset
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, offset)
    return square, offset


def pixel_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Round a float box outwards to integer pixels inside a ``width x height`` image, at
    least one pixel wide and high."""
    x1 = min(max(math.floor(box[0]), 0), width - 1)
    y1 = min(max(math.floor(box[1]), 0), height - 1)
    x2 = max(min(math.ceil(box[2]), width), x1 + 1)
    y2 = max(min(math.ceil(box[3]), height), y1 + 1)
    return x1, y1, x2, y2


def clip_box(box: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    """A float xyxy box clipped to a ``width x height`` image (it may come out empty)."""
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def crop(image: Image.Image, box: Sequence[float]) -> Image.Image:
    """The pixels of ``box`` (float xyxy, rounded outwards)."""
    return image.crop(pixel_box(box, *image.size))


def union_box(boxes: Sequence[Sequence[float]]) -> Box:
    """Smallest box covering every box."""
    if not boxes:
        raise ValueError("union_box needs at least one box")
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def max_centre_distance(boxes: Sequence[Sequence[float]]) -> float:
    """Largest Euclidean distance between the centres of two boxes (0 for fewer than two)."""
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    return max((math.dist(p, q) for i, p in enumerate(centres) for q in centres[i + 1 :]), default=0.0)


def merge_overlapping(boxes: Sequence[Sequence[float]], buffer: float = 0.0) -> list[Box]:
    """Replace every group of overlapping boxes (positive intersection area, transitively)
    by its union box; order follows each group's first box. With ``buffer`` > 0, boxes whose
    extents widened by ``buffer`` pixels on every side overlap are merged too (their union is of
    the boxes themselves)."""
    merged = [tuple(float(v) for v in b) for b in boxes]
    reach = -2.0 * buffer  # least overlap (negative: greatest gap) that merges two boxes
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if min(a[2], b[2]) - max(a[0], b[0]) > reach and min(a[3], b[3]) - max(a[1], b[1]) > reach:
                    merged[i] = union_box([a, b])
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def _collapse_axis(intervals: list[tuple[int, int]], gap: int) -> list[int]:
    """Per interval, the shift that moves it left when every empty stretch between groups of
    overlapping intervals is shortened to at most ``gap``; the first group starts at 0."""
    order = sorted(range(len(intervals)), key=lambda i: intervals[i][0])
    shifts = [0] * len(intervals)
    shift, group_end = intervals[order[0]][0], intervals[order[0]][1]
    for i in order:
        start, end = intervals[i]
        if start > group_end:  # a new group: shorten the empty stretch before it
            shift += start - group_end - min(start - group_end, gap)
        group_end = max(group_end, end)
        shifts[i] = shift
    return shifts


def paste_on_canvas(image: Image.Image, boxes: Sequence[Sequence[float]], fill: tuple[int, int, int]) -> Image.Image:
    """Paste the ROIs of ``image`` on an empty canvas at their relative positions (A.5).

    Each ROI keeps its resolution; along each axis, the empty stretches between ROIs shrink
    to at most :data:`CANVAS_GAP_FRACTION` of the largest ROI side, so left/right and
    above/below relations survive while the background between far-apart objects is dropped.
    ROIs that do not overlap in the image do not overlap on the canvas.
    """
    if not boxes:
        raise ValueError("paste_on_canvas needs at least one box")
    rects = [pixel_box(b, *image.size) for b in boxes]
    gap = max(1, round(CANVAS_GAP_FRACTION * max(max(r[2] - r[0], r[3] - r[1]) for r in rects)))
    shift_x = _collapse_axis([(r[0], r[2]) for r in rects], gap)
    shift_y = _collapse_axis([(r[1], r[3]) for r in rects], gap)
    placed = [(r[0] - sx, r[1] - sy) for r, sx, sy in zip(rects, shift_x, shift_y)]
    width = max(p[0] + r[2] - r[0] for p, r in zip(placed, rects))
    height = max(p[1] + r[3] - r[1] for p, r in zip(placed, rects))
    canvas = Image.new("RGB", (width, height), fill)
    for rect, position in zip(rects, placed):
        canvas.paste(image.crop(rect), position)
    return canvas


def draw_boxes(
    image: Image.Image, boxes: Sequence[Sequence[float]], color: tuple[int, int, int], width: int
) -> Image.Image:
    """A copy of ``image`` with each box outlined (``width`` pixels, drawn inside the box) —
    the highlighted global view of a multi-image final prompt (A.5)."""
    from PIL import ImageDraw

    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    for box in boxes:
        x1, y1, x2, y2 = pixel_box(box, *image.size)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=color, width=width)
    return marked
