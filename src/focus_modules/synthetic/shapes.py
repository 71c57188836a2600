"""The vocabulary of the synthetic scenes: target shapes, target colours, and their masks.

Targets are drawn with one flat, saturated colour each and without anti-aliasing, so every
pixel of a target has exactly its colour's RGB value; the background never contains those
values (see ``scene.render_background``), which makes ground-truth boxes checkable pixel by
pixel.
"""

from __future__ import annotations

import math

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
        (0.5 - _ARM, 0.0), (0.5 + _ARM, 0.0), (0.5 + _ARM, 0.5 - _ARM), (1.0, 0.5 - _ARM),
        (1.0, 0.5 + _ARM), (0.5 + _ARM, 0.5 + _ARM), (0.5 + _ARM, 1.0), (0.5 - _ARM, 1.0),
        (0.5 - _ARM, 0.5 + _ARM), (0.0, 0.5 + _ARM), (0.0, 0.5 - _ARM), (0.5 - _ARM, 0.5 - _ARM),
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
