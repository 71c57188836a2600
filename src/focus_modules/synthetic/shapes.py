"""The vocabulary of the synthetic scenes: target shapes, colours, marks, and their masks.

Targets are drawn with one flat, saturated colour each and without anti-aliasing, so every
pixel of a target has exactly its colour's RGB value — except its *mark*, a small centred disc
in one of :data:`MARK_COLORS` — and the background never contains the target colours (see
``scene.render_background``), which makes ground-truth boxes checkable pixel by pixel.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")

# Saturated colours: every one has a channel spread (max - min) of at least 130, far above the
# background's, so no background pixel can take a target colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (150, 40, 200),
    "orange": (250, 130, 10),
}

# Colours of the small mark at an object's centre: far from every target colour and from the
# muted background, so a mark reads as its own colour in a zoomed view; in the whole-image view
# of a 1536-2048 px scene it shrinks below a model pixel and blends into the object.
MARK_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "cyan": (0, 220, 230),
    "pink": (255, 150, 200),
}

PLURALS = {shape: "crosses" if shape == "cross" else shape + "s" for shape in SHAPES}


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    vertices = []
    for i in range(2 * points):
        radius = 0.5 if i % 2 == 0 else 0.5 * inner
        angle = -math.pi / 2 + i * math.pi / points
        vertices.append((0.5 + radius * math.cos(angle), 0.55 + radius * math.sin(angle)))
    return vertices


_ARM = 0.18  # half the width of a cross's arm, in units of the nominal size
# Vertices in units of the nominal size (0..1 on both axes); the circle is an ellipse.
_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)],
    "triangle": [(0.5, 0.065), (1.0, 0.935), (0.0, 0.935)],
    "star": _star(),
    "cross": [
        (0.5 - _ARM, 0.0),
        (0.5 + _ARM, 0.0),
        (0.5 + _ARM, 0.5 - _ARM),
        (1.0, 0.5 - _ARM),
        (1.0, 0.5 + _ARM),
        (0.5 + _ARM, 0.5 + _ARM),
        (0.5 + _ARM, 1.0),
        (0.5 - _ARM, 1.0),
        (0.5 - _ARM, 0.5 + _ARM),
        (0.0, 0.5 + _ARM),
        (0.0, 0.5 - _ARM),
        (0.5 - _ARM, 0.5 - _ARM),
    ],
    # Narrower than it is tall, so it never reads as a rotated square.
    "diamond": [(0.5, 0.0), (0.85, 0.5), (0.5, 1.0), (0.15, 0.5)],
}


def shape_mask(shape: str, size: int) -> Image.Image:
    """Binary mask of one target shape.

    Args:
        shape: one of :data:`SHAPES`.
        size: side of the nominal square the shape is inscribed in, in pixels.

    Returns:
        ``"L"`` image of ``size x size`` pixels, 255 inside the shape and 0 outside (no
        anti-aliasing); the shape's tight box is ``mask.getbbox()``.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if size < 4:
        raise ValueError(f"shape size must be >= 4 pixels, got {size}")
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    scale = size - 1
    if shape == "circle":
        draw.ellipse((0, 0, scale, scale), fill=255)
    else:
        draw.polygon([(x * scale, y * scale) for x, y in _POLYGONS[shape]], fill=255)
    return mask


def mark_mask(shape_pixels: Image.Image, fraction: float) -> Image.Image:
    """Binary mask of an object's mark: a disc of diameter ``fraction`` x the shape's nominal
    side, centred on the shape's centroid, clipped to the shape.

    Args:
        shape_pixels: the shape's ``"L"`` mask (:func:`shape_mask`).
        fraction: mark diameter / nominal side, in ``(0, 1]``.

    Returns:
        ``"L"`` image of the same size, 255 on the mark and 0 elsewhere.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"mark fraction must be in (0, 1], got {fraction}")
    inside = np.asarray(shape_pixels) > 0
    rows, cols = np.nonzero(inside)
    cy, cx = rows.mean(), cols.mean()
    radius = fraction * shape_pixels.width / 2
    yy, xx = np.mgrid[: inside.shape[0], : inside.shape[1]]
    disc = (yy + 0.5 - (cy + 0.5)) ** 2 + (xx + 0.5 - (cx + 0.5)) ** 2 <= radius**2
    return Image.fromarray(((disc & inside) * 255).astype(np.uint8), mode="L")
