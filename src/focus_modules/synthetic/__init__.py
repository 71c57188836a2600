"""Synthetic fine-grained VQA: small flat-coloured shapes on large cluttered canvases.

Deterministic (NumPy + PIL, no torch): ``make_scene(seed)`` draws a :class:`Scene` with exact
object boxes and its attribute / spatial / counting questions; ``crop_question`` and
``existence_samples`` give zoomed-in training views; ``write_vstar_layout`` (also
``python -m focus_modules.synthetic --out DIR --n 100 --seed 0``) writes a V*Bench-style folder.

Target-object convention: the phrase a question's ``target_object`` holds is what
"Is there a {target} in the image?" would ask about — the shape alone for attribute and spatial
questions (``"circle"``; the asked-for colour is never part of it), ``"{color} {shape}"`` for
counting (``"red star"``). Boxes are integer pixel edges ``(x1, y1, x2, y2)``.
"""

from .crops import (
    EXISTENCE_TEMPLATE,
    ExistenceSample,
    avoiding_crop_box,
    context_crop_box,
    crop_question,
    existence_samples,
)
from .questions import ATTRIBUTE_TEMPLATE, COUNTING_TEMPLATE, SPATIAL_TEMPLATE
from .records import FAMILIES, Box, Question, SceneObject, xyxy_to_xywh
from .scene import Scene, SceneConfig, canvas_size, make_scene, parse_target, scene_rng
from .shapes import COLORS, MARK_COLORS, PLURALS, SHAPES, mark_mask, shape_mask
from .vstar import FAMILY_DIRS, vstar_record, write_vstar_layout

__all__ = [
    "ATTRIBUTE_TEMPLATE",
    "COLORS",
    "COUNTING_TEMPLATE",
    "EXISTENCE_TEMPLATE",
    "FAMILIES",
    "FAMILY_DIRS",
    "MARK_COLORS",
    "PLURALS",
    "SHAPES",
    "SPATIAL_TEMPLATE",
    "Box",
    "ExistenceSample",
    "Question",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "avoiding_crop_box",
    "canvas_size",
    "context_crop_box",
    "crop_question",
    "existence_samples",
    "make_scene",
    "mark_mask",
    "parse_target",
    "scene_rng",
    "shape_mask",
    "vstar_record",
    "write_vstar_layout",
    "xyxy_to_xywh",
]
