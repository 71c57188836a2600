"""Plain records of a synthetic scene: its objects and its questions.

Boxes are integer pixel edges ``(x1, y1, x2, y2)``: the object covers columns ``x1 .. x2 - 1``
and rows ``y1 .. y2 - 1``, so ``x2 - x1`` is its width in pixels. V*Bench stores the same box
as ``[x1, y1, x2 - x1, y2 - y1]`` (:func:`xyxy_to_xywh`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .shapes import COLORS, MARK_COLORS

Box = tuple[int, int, int, int]

QUESTION_FAMILIES = ("attribute", "spatial", "counting")


def xyxy_to_xywh(box: Box) -> list[int]:
    """``(x1, y1, x2, y2)`` pixel edges -> V*Bench's ``[x, y, w, h]``."""
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def shift_box(box: Box, dx: int, dy: int) -> Box:
    """Translate a box by ``(dx, dy)`` pixels."""
    x1, y1, x2, y2 = box
    return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)


def boxes_intersect(a: Box, b: Box) -> bool:
    """Whether two pixel-edge boxes share at least one pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def box_contains(outer: Box, inner: Box) -> bool:
    """Whether every pixel of ``inner`` lies in ``outer``."""
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


@dataclass(frozen=True)
class SceneObject:
    """One target-like object drawn in a scene.

    Attributes:
        shape: one of ``shapes.SHAPES``.
        color: one of ``shapes.COLORS``; every pixel of the object has exactly this RGB value.
        box: tight pixel-edge box ``(x1, y1, x2, y2)`` of the drawn pixels.
        mark: one of ``shapes.MARK_COLORS``: the colour of the small disc at its centre.
    """

    shape: str
    color: str
    box: Box
    mark: str

    def __post_init__(self) -> None:
        if self.color not in COLORS or self.mark not in MARK_COLORS:
            raise ValueError(f"unknown colour {self.color!r} or mark colour {self.mark!r}")

    @property
    def name(self) -> str:
        """The noun phrase ``"{color} {shape}"``, e.g. ``"red star"``."""
        return f"{self.color} {self.shape}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2, (y1 + y2) / 2)


@dataclass(frozen=True)
class SceneQuestion:
    """One multiple-choice question about a scene, in V*Bench's terms.

    Attributes:
        family: ``"attribute"``, ``"spatial"`` or ``"counting"``.
        question: the question text, without options.
        options: the answer options; the first one is correct (as in V*Bench's JSON).
        target_object: the noun phrases a model should search for, each usable verbatim in
            "Is there a {target} in the image?": ``"{color} {shape}"`` (``"red star"``), the
            object's name as the question writes it (for counting, the counted kind).
        boxes: one ground-truth box per target instance (a counting question has one per
            counted object), pixel-edge xyxy in the image the question is asked on.
        box_target: for each box, the index of its phrase in ``target_object``.
        question_type: 1 (single instances) or 2 (several instances of one kind: counting),
            as in Sec. 3.3 of the paper.
    """

    family: str
    question: str
    options: tuple[str, ...]
    target_object: tuple[str, ...]
    boxes: tuple[Box, ...]
    box_target: tuple[int, ...]
    question_type: int

    @property
    def answer(self) -> str:
        return self.options[0]

    def shifted(self, dx: int, dy: int) -> SceneQuestion:
        """The same question with its boxes translated, e.g. into a crop's coordinates."""
        return dataclasses.replace(self, boxes=tuple(shift_box(b, dx, dy) for b in self.boxes))
