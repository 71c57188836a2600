"""Deterministic synthetic fine-grained VQA scenes: small flat-coloured shapes, each with a
tiny coloured mark at its centre, on a large cluttered canvas, with their exact boxes and the
questions they support.

Every scene is a function of its seed and config alone (one NumPy ``Generator`` per scene, PIL
drawing), for a given NumPy and Pillow version.

Composition of a scene (defaults in :class:`SceneConfig`): ``n_single`` objects of distinct
shapes and of colours no other object has, placed so that every pair of them is unambiguously
left/right of each other; one more "counted" shape with ``count`` instances of another colour
plus a few instances of the remaining colours. Every object carries a mark of a random
:data:`~focus_modules.synthetic.shapes.MARK_COLORS` colour. So every scene supports attribute
questions (the mark of a single object), spatial questions (pairs of single objects) and one
counting question (the counted colour and shape).

Why it is built so: a single object is found and verified by its colour, which survives the
downscaling of the whole image (a 28-52 px object is 2-4.9 model pixels of a 144 px view of a
1536-2048 px canvas), while its mark (0.45 x its side) shrinks to 0.9-2.2 model pixels there,
blended into the object, and becomes 4-17 model pixels only in a zoomed crop of 3-5 cells of a
24 x 24 map. A model that answers from
the whole image must guess the mark; one that finds the object and zooms can read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .background import render_background
from .questions import attribute_questions, counting_question, spatial_questions
from .records import QUESTION_FAMILIES, Box, SceneObject, SceneQuestion, boxes_intersect
from .shapes import COLORS, MARK_COLORS, SHAPES, mark_mask, shape_mask

Seed = int | Sequence[int]


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn; ``dataclasses.replace`` a default to change a field.

    Attributes:
        canvas_side: smallest and largest side of the canvas, in pixels; both sides of every
            canvas lie in this range.
        aspect_ratios: width / height ratios to draw from (uniformly).
        object_size: smallest and largest nominal side of a target object, in pixels.
        mark_fraction: diameter of an object's mark / the object's nominal side.
        n_single: number of shapes that occur exactly once.
        count_range: smallest and largest number of counted objects.
        count_decoys: largest number of extra objects of the counted shape in the colours
            left over by the single and counted objects.
        spatial_margin: smallest horizontal distance between the centres of two single-instance
            objects, as a fraction of the canvas width.
        clutter_density: background strokes per 10,000 pixels.
        noise_std: std of the background's pixel noise (0..255 units).
        max_chroma: largest distance of a background channel from the pixel's grey value; keeps
            the background muted and unable to take a target colour.
    """

    canvas_side: tuple[int, int] = (1536, 2048)
    aspect_ratios: tuple[float, ...] = (3 / 4, 1.0, 4 / 3)
    object_size: tuple[int, int] = (28, 52)
    mark_fraction: float = 0.45
    n_single: int = 3
    count_range: tuple[int, int] = (1, 5)
    count_decoys: int = 2
    spatial_margin: float = 0.1
    clutter_density: float = 2.5
    noise_std: float = 6.0
    max_chroma: float = 40.0

    def __post_init__(self) -> None:
        low, high = self.canvas_side
        if not 64 <= low <= high:
            raise ValueError(f"canvas_side must be (min, max) with 64 <= min <= max, got {self.canvas_side}")
        for ratio in self.aspect_ratios:
            if not (ratio > 0 and max(ratio, 1 / ratio) <= high / low):
                raise ValueError(f"aspect ratio {ratio} cannot fit canvas sides in {self.canvas_side}")
        if not self.aspect_ratios:
            raise ValueError("aspect_ratios must not be empty")
        if not 8 <= self.object_size[0] <= self.object_size[1] <= low // 4:
            raise ValueError(
                f"object_size must be (min, max) with 8 <= min <= max <= canvas min side / 4, got {self.object_size}"
            )
        if not 2 <= self.n_single <= len(COLORS) - 2:
            raise ValueError(f"n_single must be in 2..{len(COLORS) - 2} (colours are unique), got {self.n_single}")
        if not 0 < self.mark_fraction <= 1:
            raise ValueError(f"mark_fraction must be in (0, 1], got {self.mark_fraction}")
        if not 1 <= self.count_range[0] <= self.count_range[1]:
            raise ValueError(f"count_range must be (min, max) with 1 <= min <= max, got {self.count_range}")
        if self.count_decoys < 0:
            raise ValueError(f"count_decoys must be >= 0, got {self.count_decoys}")
        if not 0 <= self.spatial_margin < 1 / self.n_single:
            raise ValueError(f"spatial_margin must be in [0, 1 / n_single), got {self.spatial_margin}")
        if self.clutter_density < 0 or self.noise_std < 0 or not 0 <= self.max_chroma <= 60:
            raise ValueError(
                "clutter_density and noise_std must be >= 0 and max_chroma in [0, 60] (target colours have "
                f"a channel spread >= 130), got {self.clutter_density}, {self.noise_std}, {self.max_chroma}"
            )

    @classmethod
    def for_canvas(cls, canvas: int, **fields) -> SceneConfig:
        """Scenes on canvases whose sides lie in ``(3 * canvas // 4, canvas)`` pixels, with the
        default objects and clutter per pixel: objects keep their pixel size, so on a larger
        canvas (``for_canvas(8192)``: HR-Bench 8K-like 6144-8192 px sides) they are a smaller share
        of the image. ``for_canvas(2048)`` is the default config; ``fields`` override others."""
        if isinstance(canvas, bool) or not isinstance(canvas, int):
            raise ValueError(f"canvas must be an int number of pixels, got {canvas!r}")
        return cls(canvas_side=(3 * canvas // 4, canvas), **fields)

    @property
    def max_count_option(self) -> int:
        """Largest number offered as a counting option (wrong options come from 0..this)."""
        return max(self.count_range[1] + 1, 3)


@dataclass(frozen=True, eq=False)
class Scene:
    """A generated image with its objects and the questions it supports.

    Attributes:
        seed: the seed it was generated from (``make_scene(seed, config)`` redraws it).
        image: the RGB image (lossless; the V*Bench writer stores it as JPEG).
        objects: every target-like object, with tight pixel-edge boxes.
        questions: every question the scene supports, grouped by family in ``QUESTION_FAMILIES`` order;
            within a family the order is random (so ``questions_of(f)[0]`` is a random pick).
    """

    seed: Seed
    image: Image.Image
    objects: tuple[SceneObject, ...]
    questions: tuple[SceneQuestion, ...]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.image.size

    def questions_of(self, family: str) -> list[SceneQuestion]:
        if family not in QUESTION_FAMILIES:
            raise ValueError(f"unknown question family {family!r}; expected one of {QUESTION_FAMILIES}")
        return [q for q in self.questions if q.family == family]

    def find(self, target: str) -> list[SceneObject]:
        """Objects matching a target phrase: ``"{shape}"`` or ``"{color} {shape}"``."""
        color, shape = parse_target(target)
        return [o for o in self.objects if o.shape == shape and color in (None, o.color)]

    def crop(self, box: Box) -> Image.Image:
        """The pixels of ``box`` (pixel-edge xyxy, inside the image)."""
        width, height = self.size
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(f"crop box {box} is empty or outside the {width}x{height} image")
        return self.image.crop(box)


def parse_target(target: str) -> tuple[str | None, str]:
    """Split a target phrase into ``(color or None, shape)``."""
    words = target.split()
    if len(words) == 1 and words[0] in SHAPES:
        return None, words[0]
    if len(words) == 2 and words[0] in COLORS and words[1] in SHAPES:
        return words[0], words[1]
    raise ValueError(
        f"target {target!r} is not '<shape>' or '<color> <shape>' with shapes {SHAPES}, colours {tuple(COLORS)}"
    )


def canvas_size(rng: np.random.Generator, config: SceneConfig) -> tuple[int, int]:
    """Draw ``(width, height)``: a ratio from ``aspect_ratios``, then a size with both sides in
    ``canvas_side``."""
    low, high = config.canvas_side
    ratio = float(config.aspect_ratios[rng.integers(len(config.aspect_ratios))])
    if ratio >= 1:
        height = int(rng.integers(low, int(high / ratio) + 1))
        return min(high, round(height * ratio)), height
    width = int(rng.integers(low, int(high * ratio) + 1))
    return width, min(high, round(width / ratio))


def scene_rng(seed: Seed) -> np.random.Generator:
    """The generator of the scene with this seed.

    The seed's values are hashed rather than passed to ``default_rng`` as they are: NumPy's
    ``SeedSequence`` gives ``7`` and ``(7, 0)`` (or ``2**32`` and ``(0, 1)``) the same stream,
    which would let a written set's scene ``(0, 0, 0)`` repeat a training scene ``0``. Only
    ``n`` and ``(n,)`` name the same scene.
    """
    values = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    if not values or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in values):
        raise ValueError(f"seed must be a non-negative int or a non-empty sequence of them, got {seed!r}")
    digest = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class _Placer:
    """Rejection sampling of non-overlapping object boxes on the canvas."""

    gap = 8  # pixels kept free around every object
    max_tries = 2000

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], min_center_dx: float):
        self.rng, self.size, self.min_center_dx = rng, size, min_center_dx
        self.placed: list[Box] = []
        self.singles: list[Box] = []

    def place(self, width: int, height: int, single: bool) -> tuple[int, int]:
        canvas_w, canvas_h = self.size
        for _ in range(self.max_tries):
            x = int(self.rng.integers(self.gap, canvas_w - self.gap - width + 1))
            y = int(self.rng.integers(self.gap, canvas_h - self.gap - height + 1))
            box = (x, y, x + width, y + height)
            padded = (x - self.gap, y - self.gap, x + width + self.gap, y + height + self.gap)
            if any(boxes_intersect(padded, other) for other in self.placed):
                continue
            if single and not all(self._left_right(box, other) for other in self.singles):
                continue
            self.placed.append(box)
            if single:
                self.singles.append(box)
            return x, y
        raise RuntimeError(
            f"could not place a {width}x{height} object on a {canvas_w}x{canvas_h} canvas after "
            f"{self.max_tries} tries; use a larger canvas_side or fewer/smaller objects"
        )

    def _left_right(self, a: Box, b: Box) -> bool:
        horizontally_apart = a[2] <= b[0] or b[2] <= a[0]
        return horizontally_apart and abs((a[0] + a[2]) - (b[0] + b[2])) / 2 >= self.min_center_dx


def make_scene(seed: Seed, config: SceneConfig | None = None) -> Scene:
    """Generate one scene.

    Args:
        seed: non-negative int or sequence of ints (e.g. ``(dataset_seed, family, index)``);
            one generator (:func:`scene_rng`) draws everything in the scene.
        config: drawing parameters; ``SceneConfig()`` by default.

    Returns:
        The :class:`Scene`; same seed and config give the same pixels, objects and questions.
    """
    rng = scene_rng(seed)
    config = config or SceneConfig()
    size = canvas_size(rng, config)
    image = render_background(rng, size, config.clutter_density, config.noise_std, config.max_chroma)

    colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    count_shape, count_color = shapes[config.n_single], colors[config.n_single]
    decoy_colors = colors[config.n_single + 1 :]
    specs = [(shape, color, True) for shape, color in zip(shapes[: config.n_single], colors)]
    count = int(rng.integers(config.count_range[0], config.count_range[1] + 1))
    specs += [(count_shape, count_color, False)] * count
    specs += [
        (count_shape, decoy_colors[rng.integers(len(decoy_colors))], False)
        for _ in range(int(rng.integers(0, config.count_decoys + 1)))
    ]

    min_center_dx = config.spatial_margin * size[0]
    placer = _Placer(rng, size, min_center_dx)
    marks = list(MARK_COLORS)
    objects = []
    for shape, color, single in specs:
        mask = shape_mask(shape, int(rng.integers(config.object_size[0], config.object_size[1] + 1)))
        mark = marks[rng.integers(len(marks))]
        mx1, my1, mx2, my2 = mask.getbbox()
        x, y = placer.place(mx2 - mx1, my2 - my1, single)
        paste_box = (x - mx1, y - my1, x - mx1 + mask.width, y - my1 + mask.height)
        image.paste(COLORS[color], paste_box, mask)
        image.paste(MARK_COLORS[mark], paste_box, mark_mask(mask, config.mark_fraction))
        objects.append(SceneObject(shape, color, (x, y, x + mx2 - mx1, y + my2 - my1), mark))

    by_family = {
        "attribute": attribute_questions(rng, objects),
        "spatial": spatial_questions(rng, objects, min_center_dx),
        "counting": [counting_question(rng, objects, count_color, count_shape, config.max_count_option)],
    }
    questions = tuple(
        by_family[family][i] for family in QUESTION_FAMILIES for i in rng.permutation(len(by_family[family]))
    )
    return Scene(seed=seed, image=image, objects=tuple(objects), questions=questions)
