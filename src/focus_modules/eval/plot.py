"""Accuracy against visual-search forward passes, one point per run (the paper's Fig. 3).

Each run is a ``focus eval`` output: its summary JSON, its results file (the summary beside it,
:func:`focus_modules.eval.runner.summary_path_for`), or a folder holding one summary. The
x value is the summary's ``fp_search_unshared_mean`` (the search passes each question used),
the y value its ``accuracy``. Drawn with Pillow (no plotting library needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SUMMARY_SUFFIX = ".summary.json"
SIZE = (900, 600)
MARGIN = (90, 40, 220, 70)  # left, top, right (room for the labels), bottom
POINT_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75))


@dataclass(frozen=True)
class RunPoint:
    """One run on the plot: ``label``, mean search forward passes per question, accuracy (%)."""

    label: str
    search_fps: float
    accuracy: float


def summary_file(path: Path) -> Path:
    """The summary JSON of a ``focus eval`` output given as a summary, a results file or a folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*" + SUMMARY_SUFFIX))
        if len(found) != 1:
            raise ValueError(f"{path}: expected one *{SUMMARY_SUFFIX} in the folder, found {len(found)}")
        return found[0]
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.name.endswith(SUMMARY_SUFFIX) or path.suffix == ".json":
        return path
    beside = path.with_name(path.stem + SUMMARY_SUFFIX)
    if not beside.exists():
        raise ValueError(f"{path}: no summary beside it ({beside.name}); has its focus eval finished?")
    return beside


def run_point(path: Path, label: str | None = None) -> RunPoint:
    """The point of one ``focus eval`` output (see :func:`summary_file`); the default label is
    the method, with ``n_steps`` for FOCUS."""
    source = summary_file(path)
    try:
        summary = json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{source}: not JSON ({err})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{source}: not a focus eval summary (a JSON object is expected)")
    accuracy = summary.get("accuracy")
    fps = summary.get("fp_search_unshared_mean", summary.get("fp_search_mean"))
    if not isinstance(accuracy, (int, float)) or not isinstance(fps, (int, float)):
        raise ValueError(f"{source}: not a focus eval summary with answered questions (no accuracy / fp_search_mean)")
    if label is None:
        method = str(summary.get("method", source.stem))
        steps = (summary.get("config") or {}).get("n_steps")
        label = f"{method} n_steps={steps}" if method == "focus" and steps is not None else method
    return RunPoint(label, float(fps), float(accuracy))


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``."""
    span = max(high - low, 1e-9)
    raw = span / count
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def draw_plot(points: Sequence[RunPoint], out: Path, title: str = "") -> Path:
    """Write the scatter plot of ``points`` (accuracy % against search FPs) as a PNG."""
    if not points:
        raise ValueError("nothing to plot: no runs given")
    width, height = SIZE
    left, top, right, bottom = MARGIN
    xs = _ticks(0.0, max(p.search_fps for p in points) * 1.1 or 1.0)
    lows = min(p.accuracy for p in points)
    ys = _ticks(max(0.0, lows - 10), min(100.0, max(p.accuracy for p in points) + 10))
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    def at(x: float, y: float) -> tuple[float, float]:
        px = left + (x - xs[0]) / (xs[-1] - xs[0]) * (width - left - right)
        py = height - bottom - (y - ys[0]) / (ys[-1] - ys[0]) * (height - top - bottom)
        return px, py

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for x in xs:
        px, _ = at(x, ys[0])
        draw.line((px, height - bottom, px, height - bottom + 5), fill="black")
        draw.text((px, height - bottom + 8), f"{x:g}", fill="black", font=font, anchor="ma")
    for y in ys:
        _, py = at(xs[0], y)
        draw.line((left - 5, py, left, py), fill="black")
        draw.line((left, py, width - right, py), fill=(230, 230, 230))
        draw.text((left - 8, py), f"{y:g}", fill="black", font=font, anchor="rm")
    draw.text(
        (width / 2, height - 25), "visual-search forward passes per question", fill="black", font=font, anchor="mm"
    )
    draw.text((15, height / 2), "accuracy (%)", fill="black", font=font, anchor="lm")
    if title:
        draw.text((width / 2, 15), title, fill="black", font=font, anchor="mm")
    for i, point in enumerate(points):
        px, py = at(point.search_fps, point.accuracy)
        color = POINT_COLORS[i % len(POINT_COLORS)]
        draw.ellipse((px - 5, py - 5, px + 5, py + 5), fill=color)
        text = f"{point.label} ({point.search_fps:.1f} FPs, {point.accuracy:.1f}%)"
        draw.text((px + 8, py - 8 - 12 * (i % 2)), text, fill=color, font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def plot_runs(paths: Sequence[Path], out: Path, labels: Sequence[str] | None = None, title: str = "") -> Path:
    """:func:`run_point` of each path (``labels`` replace the default labels, one per path),
    drawn by :func:`draw_plot`."""
    if labels and len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} runs; give one --label per run or none")
    points = [run_point(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    return draw_plot(points, out, title)
