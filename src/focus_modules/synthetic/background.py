"""Textured, cluttered backgrounds in muted colours.

A background is a gradient between two muted colours, low-frequency blotches, many small
strokes (lines, scribbles, open arcs, elongated lumpy pebbles) and pixel noise. No closed
regular outline or polygon is drawn, so nothing in the clutter reads as one of the target
shapes, and every pixel's channels stay within ``max_chroma`` of the pixel's grey value, so no
pixel can match a target colour.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def _muted_color(rng: np.random.Generator) -> tuple[int, int, int]:
    grey = rng.uniform(70, 190)
    return tuple(int(c) for c in np.clip(grey + rng.normal(0, 15, 3), 0, 255))


def _blotches(rng: np.random.Generator, size: tuple[int, int], amplitude: float) -> np.ndarray:
    """Smooth random field, [H, W, 3] float32, mostly shared across channels."""
    width, height = size
    grid_w, grid_h = max(2, width // 160), max(2, height // 160)
    coarse = rng.normal(0, 1, (grid_h, grid_w, 1)) + 0.3 * rng.normal(0, 1, (grid_h, grid_w, 3))
    field = np.empty((height, width, 3), np.float32)  # filled channel by channel: no stacked copy
    for c in range(3):
        field[..., c] = np.asarray(Image.fromarray(coarse[..., c].astype(np.float32)).resize(size, Image.BICUBIC))
    field *= amplitude
    return field


def _draw_clutter(rng: np.random.Generator, image: Image.Image, n_strokes: int) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(n_strokes):
        color = _muted_color(rng)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        kind = rng.integers(4)
        line_width = int(rng.integers(1, 4))
        if kind == 0:  # straight line
            length, angle = rng.uniform(10, 120), rng.uniform(0, 2 * math.pi)
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw.line(((x, y), end), fill=color, width=line_width)
        elif kind == 1:  # scribble: a short random walk
            points = [(x, y)]
            for _ in range(int(rng.integers(3, 8))):
                step, angle = rng.uniform(5, 30), rng.uniform(0, 2 * math.pi)
                x, y = x + step * math.cos(angle), y + step * math.sin(angle)
                points.append((x, y))
            draw.line(points, fill=color, width=line_width, joint="curve")
        elif kind == 2:  # open arc (never a full circle)
            radius, start = rng.uniform(5, 40), rng.uniform(0, 360)
            extent = rng.uniform(60, 240)
            bounds = (x - radius, y - radius, x + radius, y + radius)
            draw.arc(bounds, start, start + extent, fill=color, width=line_width)
        else:  # pebble: a lumpy, elongated filled blob (never triangle- or circle-like)
            n_vertices = int(rng.integers(8, 13))
            long_radius, tilt = rng.uniform(4, 20), rng.uniform(0, math.pi)
            cos, sin = math.cos(tilt), math.sin(tilt)
            short_radius = long_radius * rng.uniform(0.35, 0.7)
            angles = np.sort(rng.uniform(0, 2 * math.pi, n_vertices))
            jitter = rng.uniform(0.75, 1.0, n_vertices)
            vertices = []
            for a, j in zip(angles, jitter):
                u, v = j * long_radius * math.cos(a), j * short_radius * math.sin(a)
                vertices.append((x + u * cos - v * sin, y + u * sin + v * cos))
            draw.polygon(vertices, fill=color)


def render_background(
    rng: np.random.Generator,
    size: tuple[int, int],
    clutter_density: float,
    noise_std: float,
    max_chroma: float,
    rows_per_band: int = 256,
) -> Image.Image:
    """Draw one background.

    Args:
        rng: the scene's generator (consumed).
        size: ``(width, height)`` in pixels.
        clutter_density: strokes per 10,000 pixels.
        noise_std: std of the per-pixel Gaussian noise, in 0..255 units.
        max_chroma: largest allowed distance of a channel from the pixel's channel mean.
        rows_per_band: rows of the final noise step processed at once (memory only; the
            pixels are the same for any value).

    Returns:
        RGB image of ``size``.
    """
    width, height = size
    low, high = np.array(_muted_color(rng), np.float32), np.array(_muted_color(rng), np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)
    ramp = np.float32(math.cos(angle)) * xs[None, :] + np.float32(math.sin(angle)) * ys[:, None]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    pixels = _blotches(rng, size, amplitude=18.0)
    pixels += low
    pixels += (high - low) * ramp[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))

    _draw_clutter(rng, image, n_strokes=int(clutter_density * width * height / 10_000))

    # Noise and chroma clipping, a band of rows at a time: per-pixel arithmetic on the same noise
    # stream (NumPy draws it in the same order in bands), so the pixels do not depend on the band
    # height, while an 8K canvas needs no full-size float copies.
    clean = np.asarray(image)
    out = np.empty_like(clean)
    for top in range(0, height, rows_per_band):
        band = clean[top : top + rows_per_band]
        pixels = rng.standard_normal(band.shape, dtype=np.float32)
        pixels *= noise_std
        pixels += band
        np.clip(pixels, 0, 255, out=pixels)
        grey = pixels.mean(axis=-1, keepdims=True)
        # Clipping the channels toward the pixel's mean keeps them in 0..255 and only lowers the spread.
        pixels -= grey
        np.clip(pixels, -max_chroma, max_chroma, out=pixels)
        pixels += grey
        out[top : top + rows_per_band] = np.rint(pixels, out=pixels)
    return Image.fromarray(out)
