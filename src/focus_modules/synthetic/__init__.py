"""Synthetic fine-grained VQA: small flat-coloured shapes, each with a tiny coloured mark, on
large cluttered canvases.

Deterministic (NumPy + PIL, no torch): ``make_scene(seed)`` draws a :class:`Scene` with exact
object boxes and its attribute ("What is the mark color of the red star?"), spatial and
counting questions; ``context_crop_box`` gives zoomed-in views; ``write_vstar_layout`` (also
``python -m focus_modules.synthetic --out DIR --n 100 --seed 0``) writes a V*Bench-style folder.

Target-object convention: the phrase a question's ``target_object`` holds is what
"Is there a {target} in the image?" would ask about, ``"{color} {shape}"`` (``"red star"``),
the object's name as the question writes it. Boxes are integer pixel edges ``(x1, y1, x2, y2)``.
"""

from .crops import context_crop_box
from .questions import ATTRIBUTE_TEMPLATE, COUNTING_TEMPLATE, SPATIAL_TEMPLATE
from .records import QUESTION_FAMILIES, Box, SceneObject, SceneQuestion, xyxy_to_xywh
from .scene import Scene, SceneConfig, canvas_size, make_scene, parse_target, scene_rng
from .shapes import COLORS, MARK_COLORS, PLURALS, SHAPES, mark_mask, shape_mask
from .vstar import FAMILY_DIRS, vstar_record, write_vstar_layout

__all__ = [
    "ATTRIBUTE_TEMPLATE",
    "COLORS",
    "COUNTING_TEMPLATE",
    "QUESTION_FAMILIES",
    "FAMILY_DIRS",
    "MARK_COLORS",
    "PLURALS",
    "SHAPES",
    "SPATIAL_TEMPLATE",
    "Box",
    "SceneQuestion",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "canvas_size",
    "context_crop_box",
    "make_scene",
    "mark_mask",
    "parse_target",
    "scene_rng",
    "shape_mask",
    "vstar_record",
    "write_vstar_layout",
    "xyxy_to_xywh",
]
