"""The three question families of the fine-grained VQA benchmarks, posed on a scene's objects.

- attribute (V*Bench "direct attributes"): "What is the mark color of the red star?", the
  four mark colours as options; asked about every single-instance object. The object is
  named by a colour no other object of the scene has, so it can be found and verified by
  colour; the asked detail, its small centred mark, is resolved only in a zoomed view.
- spatial (V*Bench "relative position"): "Is the red star on the left or right side of the
  blue circle?", options left/right; asked only about two single-instance objects whose boxes
  do not overlap horizontally and whose centres are at least the scene's spatial margin apart.
- counting (type 2): "How many red stars are there in the image?", 4 numeric options.

The wording keeps every object phrase after "the" and every other noun phrase ending in a word
that names a property ("mark color"), so that the keyword fallback of step I
(``focus_modules.targets.keyword_targets``) names exactly the target objects.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .records import SceneObject, SceneQuestion
from .shapes import MARK_COLORS, PLURALS

ATTRIBUTE_TEMPLATE = "What is the mark color of the {name}?"
SPATIAL_TEMPLATE = "Is the {name1} on the left or right side of the {name2}?"
COUNTING_TEMPLATE = "How many {color} {plural} are there in the image?"


def _options(rng: np.random.Generator, correct: str, pool: Sequence[str], n: int) -> tuple[str, ...]:
    wrong = [p for p in pool if p != correct]
    picked = rng.choice(len(wrong), size=n - 1, replace=False)
    return (correct, *(wrong[i] for i in picked))


def attribute_questions(rng: np.random.Generator, objects: Sequence[SceneObject]) -> list[SceneQuestion]:
    """One mark-colour question per object whose colour no other object has."""
    color_counts = Counter(o.color for o in objects)
    return [
        SceneQuestion(
            family="attribute",
            question=ATTRIBUTE_TEMPLATE.format(name=o.name),
            options=_options(rng, o.mark, list(MARK_COLORS), 4),
            target_object=(o.name,),
            boxes=(o.box,),
            box_target=(0,),
            question_type=1,
        )
        for o in objects
        if color_counts[o.color] == 1
    ]


def spatial_questions(
    rng: np.random.Generator, objects: Sequence[SceneObject], min_center_dx: float
) -> list[SceneQuestion]:
    """One left/right question per unambiguous pair of uniquely coloured objects (random order)."""
    color_counts = Counter(o.color for o in objects)
    singles = [o for o in objects if color_counts[o.color] == 1]
    questions = []
    for a, b in itertools.combinations(singles, 2):
        if rng.random() < 0.5:
            a, b = b, a
        separated = a.box[2] <= b.box[0] or b.box[2] <= a.box[0]
        if not separated or abs(a.center[0] - b.center[0]) < min_center_dx:
            continue
        answer, other = ("left", "right") if a.center[0] < b.center[0] else ("right", "left")
        questions.append(
            SceneQuestion(
                family="spatial",
                question=SPATIAL_TEMPLATE.format(name1=a.name, name2=b.name),
                options=(answer, other),
                target_object=(a.name, b.name),
                boxes=(a.box, b.box),
                box_target=(0, 1),
                question_type=1,
            )
        )
    return questions


def counting_question(
    rng: np.random.Generator, objects: Sequence[SceneObject], color: str, shape: str, max_option: int
) -> SceneQuestion:
    """How many objects of one colour and shape; wrong options are drawn from 0..max_option."""
    matches = sorted((o for o in objects if o.color == color and o.shape == shape), key=lambda o: o.box)
    return SceneQuestion(
        family="counting",
        question=COUNTING_TEMPLATE.format(color=color, plural=PLURALS[shape]),
        options=_options(rng, str(len(matches)), [str(n) for n in range(max_option + 1)], 4),
        target_object=(f"{color} {shape}",),
        boxes=tuple(o.box for o in matches),
        box_target=(0,) * len(matches),
        question_type=2,
    )
