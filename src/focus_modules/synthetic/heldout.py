"""Held-out synthetic questions and how to score FOCUS on them (accuracy, ROI recall).

Held-out scenes use seeds ``(HELDOUT_SEED_TAG, seed, i)``, a tag no training run uses
(training draws ``(7001, seed, i)``), so no held-out image was ever seen in training. Options
are shown in a seeded random order; the correct letter is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import Image

from .records import Box, Question
from .scene import make_scene, scene_rng

HELDOUT_SEED_TAG = 9001
# Validation scenes of the tiny model's diagnostics (benchmarks/tiny_model_probes.py,
# tiny_vision_tower_probe.py): neither trained on nor benchmarked.
VALIDATION_SEED_TAG = 9501
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LETTER = re.compile(r"\b([A-E])\b")


@dataclass(frozen=True)
class HeldoutItem:
    """One held-out question: the image, the question, its options as shown, the correct
    letter, and the ground truth (family, target phrases, boxes)."""

    id: str
    image: Image.Image
    question: Question
    options: list[str]
    letter: str

    @property
    def family(self) -> str:
        return self.question.family


def heldout_items(per_family: dict[str, int], seed: int = 0) -> list[HeldoutItem]:
    """Questions of held-out scenes: scene ``i`` gives its first question of each family while
    that family still needs questions (``per_family``, e.g. ``{"attribute": 150, ...}``)."""
    needed = dict(per_family)
    items, index = [], 0
    while any(n > 0 for n in needed.values()):
        scene = make_scene((HELDOUT_SEED_TAG, seed, index))
        rng = scene_rng((HELDOUT_SEED_TAG + 1, seed, index))
        for family, n in needed.items():
            questions = scene.questions_of(family)
            if n <= 0 or not questions:
                continue
            question = questions[0]
            order = rng.permutation(len(question.options))
            options = [question.options[i] for i in order]
            letter = OPTION_LETTERS[int(list(order).index(0))]
            items.append(HeldoutItem(f"{seed}-{index}-{family}", scene.image, question, options, letter))
            needed[family] -= 1
        index += 1
    return items


def is_correct(answer: str, letter: str, lenient: bool = False) -> bool:
    """Strict: the reply is the letter (A.2); lenient: its first standalone A-E is."""
    if not lenient:
        return answer.strip().rstrip(".").strip("()") == letter
    found = LETTER.search(answer)
    return found is not None and found.group(1) == letter


def coverage(roi: tuple[float, float, float, float], box: Box) -> float:
    """Fraction of ``box``'s area inside ``roi`` (Sec. 4.3 counts a hit at >= 0.5)."""
    w = max(0.0, min(roi[2], box[2]) - max(roi[0], box[0]))
    h = max(0.0, min(roi[3], box[3]) - max(roi[1], box[1]))
    return w * h / ((box[2] - box[0]) * (box[3] - box[1]))


def roi_hits(result, question: Question, t_type2: float, threshold: float = 0.5) -> dict[str, list[bool]]:
    """Per GT box of the question: ``"top"`` — covered by a ROI FOCUS selected (type 1: each
    target's best-ranked ROI; type 2: every ROI with confidence above ``t_type2``); ``"any"`` —
    covered by any proposed ROI of any target (the recall of Sec. 4.3)."""
    if result.question_type == 2:
        chosen = [r.box for rois in result.rois for r in rois if r.confidence is not None and r.confidence > t_type2]
    else:
        chosen = [rois[0].box for rois in result.rois if rois]
    proposed = [r.box for rois in result.rois for r in rois]
    return {
        "top": [any(coverage(b, gt) >= threshold for b in chosen) for gt in question.boxes],
        "any": [any(coverage(b, gt) >= threshold for b in proposed) for gt in question.boxes],
    }
