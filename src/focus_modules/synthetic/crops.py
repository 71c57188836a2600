"""Crops of a scene for training on zoomed-in views, and existence questions on them.

Every helper returns boxes (pixel-edge xyxy in the scene's image); ``scene.crop(box)`` gives the
pixels. Nothing here formats prompts for a particular model: an existence sample carries the
paper's generic question "Is there a {target} in the image?" and the Yes/No answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .records import Box, Question, boxes_intersect
from .scene import Scene
from .shapes import COLORS, SHAPES

EXISTENCE_TEMPLATE = "Is there a {target} in the image?"


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


def avoiding_crop_box(
    avoid: Sequence[Box],
    image_size: tuple[int, int],
    side: int,
    rng: np.random.Generator,
    max_tries: int = 200,
) -> Box | None:
    """A random square crop of ``side`` pixels that shares no pixel with any box in ``avoid``.

    Returns:
        Pixel-edge xyxy box, or ``None`` if ``max_tries`` random positions all hit a box.
    """
    width, height = image_size
    side = min(side, width, height)
    for _ in range(max_tries):
        x1, y1 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        box = (x1, y1, x1 + side, y1 + side)
        if not any(boxes_intersect(box, a) for a in avoid):
            return box
    return None


def crop_question(
    scene: Scene, question: Question, rng: np.random.Generator, context: tuple[float, float] = (1.5, 6.0)
) -> tuple[Box, Question]:
    """A crop around all of a question's target boxes, and the question in the crop's coordinates.

    The answer does not change: the crop contains every box of the question (for counting, every
    counted object), and no other object of an attribute/spatial question's shape exists.

    Returns:
        ``(crop_box, question)``; ``scene.crop(crop_box)`` is the image to ask it on.
    """
    box = context_crop_box(question.boxes, scene.size, rng, context=context)
    return box, question.shifted(-box[0], -box[1])


@dataclass(frozen=True)
class ExistenceSample:
    """"Is there a {target} in the image?" asked on one crop of a scene.

    Attributes:
        target: ``"{shape}"`` or ``"{color} {shape}"``.
        answer: ``"Yes"`` if an object matching ``target`` lies entirely in ``box``, ``"No"`` if
            no pixel of a matching object does.
        box: pixel-edge xyxy crop in the scene's image (the whole image is allowed).
    """

    target: str
    answer: str
    box: Box

    @property
    def question(self) -> str:
        return EXISTENCE_TEMPLATE.format(target=self.target)


def _random_target(rng: np.random.Generator, with_color: bool) -> str:
    shape = SHAPES[rng.integers(len(SHAPES))]
    if not with_color:
        return shape
    colors = list(COLORS)
    return f"{colors[rng.integers(len(colors))]} {shape}"


def existence_samples(
    scene: Scene,
    rng: np.random.Generator,
    n: int,
    context: tuple[float, float] = (2.0, 8.0),
    full_image_fraction: float = 0.0,
) -> list[ExistenceSample]:
    """Balanced Yes/No existence questions on crops of a scene (plus optional whole images).

    Even samples are "Yes" (a crop around one object, asking for its shape or its colour and
    shape), odd samples "No": a random shape or colour+shape phrase, on a crop — preferably
    around another object, a hard negative — that touches no object matching it. Half the
    targets carry a colour. With ``full_image_fraction`` > 0, that fraction of samples asks on
    the whole image instead (answer from the whole scene).

    Args:
        scene: the scene.
        rng: generator (consumed).
        n: number of samples.
        context: crop side / object side ratio range for crops.
        full_image_fraction: probability that a sample asks on the whole image.

    Returns:
        ``n`` :class:`ExistenceSample`, alternating Yes/No (whole-image ones may break the
        alternation when their answer is decided by the scene).
    """
    if n < 0 or not 0 <= full_image_fraction <= 1:
        raise ValueError(f"need n >= 0 and 0 <= full_image_fraction <= 1, got {n}, {full_image_fraction}")
    width, height = scene.size
    whole = (0, 0, width, height)
    samples = []
    while len(samples) < n:
        with_color = bool(rng.random() < 0.5)
        if rng.random() < full_image_fraction:
            target = _random_target(rng, with_color)
            samples.append(ExistenceSample(target, "Yes" if scene.find(target) else "No", whole))
        elif len(samples) % 2 == 0:
            obj = scene.objects[rng.integers(len(scene.objects))]
            target = obj.name if with_color else obj.shape
            box = context_crop_box([obj.box], scene.size, rng, context)
            samples.append(ExistenceSample(target, "Yes", box))
        else:
            target = _random_target(rng, with_color)
            avoid = [o.box for o in scene.find(target)]
            others = [o for o in scene.objects if o.box not in avoid]
            anchor = others[rng.integers(len(others))] if others else None
            box = context_crop_box([anchor.box], scene.size, rng, context) if anchor else None
            if box is None or any(boxes_intersect(box, a) for a in avoid):
                side_of = scene.objects[rng.integers(len(scene.objects))].box
                side = round(max(side_of[2] - side_of[0], side_of[3] - side_of[1]) * rng.uniform(*context))
                box = avoiding_crop_box(avoid, scene.size, side, rng)
            if box is not None:
                samples.append(ExistenceSample(target, "No", box))
    return samples

