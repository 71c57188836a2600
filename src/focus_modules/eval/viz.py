"""One picture of a FOCUS answer: the image with the chosen ROIs, then one panel per target
with its object relevance map laid over the image. Pure PIL (no matplotlib needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

# One colour per target (cycled), readable over photos.
TARGET_COLORS = ((255, 64, 64), (64, 160, 255), (64, 220, 96), (255, 200, 0), (220, 96, 255), (0, 220, 220))
# The heat map's colour scale (inferno's anchor colours, linearly interpolated): dark purple
# for low relevance through red and orange to pale yellow for the map's maximum.
HEAT_SCALE = (
    (0.0, (0, 0, 4)),
    (0.25, (87, 16, 110)),
    (0.5, (188, 55, 84)),
    (0.75, (249, 142, 9)),
    (1.0, (252, 255, 164)),
)
HEAT_MAX_ALPHA = 210
CAPTION_LINE_HEIGHT = 14


def render_result(
    image: Image.Image,
    result: Any,
    max_side: int = 768,
    map_extents: Sequence[Sequence[float]] | None = None,
    truth_boxes: Sequence[Sequence[float]] = (),
    caption: Sequence[str] = (),
) -> Image.Image:
    """Draw ``result`` (a FocusWrapper result) over ``image``.

    Panel 0 shows the image with, for every target, its best ROI (thick) and its other
    verified ROIs (thin). Panel ``t + 1`` shows target ``t``'s relevance map as a heat map
    (min-max normalised, bilinear; colour and opacity grow with relevance, :data:`HEAT_SCALE`,
    with the scale drawn at the panel's bottom) and that target's ROIs. Panels are ``image`` scaled so
    that its longer side is at most ``max_side`` (never enlarged), side by side.

    Args:
        image: the original image (ROI boxes are in its pixels).
        result: has ``targets``, ``rois`` (per target, Roi with ``box``/``confidence``) and
            ``relevance_maps`` (per target, ``(h, w)`` tensor).
        max_side: longest side of a panel in pixels.
        map_extents: per target, the box ``(x1, y1, x2, y2)`` in original pixels that its map
            spans (it may reach outside the image, e.g. a map over a padded square); ``None``
            means the map spans the image.
        truth_boxes: pixel boxes of the asked objects, where known (a benchmark's GT boxes),
            drawn in white on every panel so that the map's peak can be judged against them.
        caption: lines of text written under the panels (e.g. the answers and measured rates).

    Returns:
        an RGB image of size ``(panel_w * (1 + len(targets)), panel_h + caption height)``.
    """
    if map_extents is not None and len(map_extents) != len(result.relevance_maps):
        raise ValueError(f"got {len(map_extents)} map extents for {len(result.relevance_maps)} relevance maps")
    image = image.convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    panel_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    base = image.resize(panel_size, Image.BILINEAR)
    targets = list(result.targets)
    caption_h = CAPTION_LINE_HEIGHT * len(caption) + (8 if caption else 0)
    canvas = Image.new("RGB", (panel_size[0] * (1 + len(targets)), panel_size[1] + caption_h), (0, 0, 0))

    overview = base.copy()
    draw = ImageDraw.Draw(overview)
    for t, rois in enumerate(result.rois):
        _draw_rois(draw, rois, scale, TARGET_COLORS[t % len(TARGET_COLORS)], label=_label(targets, t))
    _draw_truth(draw, truth_boxes, scale)
    canvas.paste(overview, (0, 0))

    for t, heat in enumerate(result.relevance_maps):
        extent = map_extents[t] if map_extents is not None else (0, 0, image.width, image.height)
        panel = _overlay(base, heat, [v * scale for v in extent])
        draw = ImageDraw.Draw(panel)
        rois = result.rois[t] if t < len(result.rois) else []
        _draw_rois(draw, rois, scale, TARGET_COLORS[t % len(TARGET_COLORS)], label=None)
        _draw_truth(draw, truth_boxes, scale)
        draw.text((4, 4), _label(targets, t), fill=(255, 255, 255))
        _draw_scale(panel)
        canvas.paste(panel, (panel_size[0] * (t + 1), 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(caption):
        draw.text((6, panel_size[1] + 4 + CAPTION_LINE_HEIGHT * i), line, fill=(255, 255, 255))
    return canvas


def _draw_truth(draw: ImageDraw.ImageDraw, boxes: Sequence[Sequence[float]], scale: float) -> None:
    """The asked objects' boxes, white, a few pixels outside the object so it stays visible."""
    for box in boxes:
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle((x1 - 3, y1 - 3, x2 + 3, y2 + 3), outline=(255, 255, 255), width=1)


def _label(targets: list[str], t: int) -> str:
    return targets[t] if t < len(targets) else f"target {t}"


def _draw_rois(
    draw: ImageDraw.ImageDraw, rois: Sequence[Any], scale: float, color: tuple[int, int, int], label: str | None
) -> None:
    for rank, roi in enumerate(rois):
        if rank > 0 and roi.confidence is None:
            continue  # proposed but never verified: not part of the decision
        x1, y1, x2, y2 = (float(v) * scale for v in roi.box)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=3 if rank == 0 else 1)
        if rank == 0 and label:
            draw.text((x1 + 2, y1 + 2), label, fill=color)


def _overlay(base: Image.Image, heat: Any, extent: Sequence[float]) -> Image.Image:
    """``base`` with ``heat`` (h, w) stretched over ``extent`` (x1, y1, x2, y2, panel pixels)."""
    values = torch.as_tensor(heat, dtype=torch.float32).detach().cpu().numpy()
    if values.ndim != 2:
        raise ValueError(f"a relevance map must be (h, w), got shape {tuple(values.shape)}")
    low, high = float(values.min()), float(values.max())
    values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    x1, y1, x2, y2 = (round(v) for v in extent)
    size = (max(1, x2 - x1), max(1, y2 - y1))
    smooth = np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    smooth = np.clip(smooth, 0.0, 1.0)
    rgba = np.concatenate([heat_colors(smooth), np.uint8(np.rint(np.sqrt(smooth) * HEAT_MAX_ALPHA))[..., None]], -1)
    heat_layer = Image.fromarray(rgba, mode="RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(heat_layer, (x1, y1))  # clipped where the map reaches outside the image
    return Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")


def heat_colors(values: np.ndarray) -> np.ndarray:
    """``[...]`` values in ``[0, 1]`` -> ``[..., 3]`` uint8 colours of :data:`HEAT_SCALE`."""
    stops = np.array([stop for stop, _ in HEAT_SCALE])
    colors = np.array([color for _, color in HEAT_SCALE], dtype=np.float64)
    channels = [np.interp(values, stops, colors[:, c]) for c in range(3)]
    return np.uint8(np.rint(np.stack(channels, -1)))


def _draw_scale(panel: Image.Image) -> None:
    """The colour scale, low to high relevance, along the bottom of a map panel."""
    width, height = panel.size
    bar_w, bar_h = max(8, width // 3), max(4, height // 40)
    x0, y0 = 4, height - bar_h - 4
    if y0 < 0:
        return
    ramp = heat_colors(np.linspace(0.0, 1.0, bar_w))[None].repeat(bar_h, 0)
    panel.paste(Image.fromarray(ramp), (x0, y0))
    draw = ImageDraw.Draw(panel)
    draw.text((x0 + bar_w + 4, y0 - 6), "relevance: low -> high (min-max)", fill=(255, 255, 255))
