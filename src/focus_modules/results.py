"""What a question's answer records: its ROIs, maps, and the forward passes, tokens and time each
phase spent (the one accounting every method shares).

Forward passes are counted per question and phase as the number of prompts of that question the
model processed (A.2 counts one FP per call of the model on one prompt), so the counts do not
depend on how questions are batched.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from focus_modules.adapters.base import Batch
from focus_modules.adapters.views import Box

PHASES = ("targets", "relevance", "verify", "answer")
# Phases whose passes are not visual-search passes (A.2): step I's target naming (a text-only
# prompt every method may run) and the final answer (inference schemes differ there, C.5).
NON_SEARCH_PHASES = ("targets", "answer")
# A phase whose name ends in one of these counts passes that are not forward passes over a
# prompt: backward passes, and passes that continue a cached prefix. They are reported per
# phase but never counted as forward passes.
NOT_FORWARD_SUFFIXES = ("backward", "continuation")


def is_forward_phase(phase: str) -> bool:
    """Whether ``phase`` counts forward passes (see :data:`NOT_FORWARD_SUFFIXES`)."""
    return not phase.endswith(NOT_FORWARD_SUFFIXES)


def forward_pass_total(forward_passes: Mapping[str, int]) -> int:
    """A question's forward passes: the counts of every forward phase."""
    return sum(count for phase, count in forward_passes.items() if is_forward_phase(phase))


def search_forward_passes(forward_passes: Mapping[str, int]) -> int:
    """A question's visual-search forward passes (the paper's "search FPs"): every forward
    pass except those of :data:`NON_SEARCH_PHASES` (FOCUS: ``relevance + verify``; ZoomEye:
    ``search``; ViCrop: its attention passes)."""
    return sum(
        count for phase, count in forward_passes.items() if is_forward_phase(phase) and phase not in NON_SEARCH_PHASES
    )


@dataclass
class Roi:
    """A region of interest.

    Attributes:
        box: ``(x1, y1, x2, y2)`` float pixels of the ORIGINAL image.
        relevance: the proposer's score of the ROI's anchor on the relevance map.
        confidence: existence confidence (Eq. 5) in ``[-1, 1]``; ``None`` if not verified.
    """

    box: Box
    relevance: float
    confidence: float | None = None


def roi_record(roi: Roi) -> dict[str, Any]:
    """An ROI as a JSON-ready record: ``{"box": [x1, y1, x2, y2], "relevance": float,
    "confidence": float or None}`` (what result files and ``focus ask --json`` write)."""
    return {
        "box": [float(v) for v in roi.box],
        "relevance": float(roi.relevance),
        "confidence": None if roi.confidence is None else float(roi.confidence),
    }


@dataclass
class FocusResult:
    """The answer to one question and how FOCUS got there.

    Attributes:
        answer: the generated text, as the model wrote it (stripped of surrounding spaces).
        targets: the target objects searched for ("all " markers removed).
        question_type: 1 (single instances) or 2 (every instance, e.g. counting).
        rois: per target, its ROIs best first: verified ones by confidence, then the
            unverified ones by relevance.
        relevance_maps: per target, the ``(h, w)`` float32 relevance map (CPU).
        map_extents: per target, the ``(x1, y1, x2, y2)`` pixels of the original image that
            the whole map covers (beyond the image where the model's view is padded).
        forward_passes: phase -> number of prompts of this question the model processed
            (with prefix reuse, the shared prefix and each target's suffix count as one each).
        tokens: phase -> prompt tokens of this question the model processed (padding and
            generated tokens not counted).
        timings: phase -> seconds (a batched call's time is shared by its forward passes).
        method: "focus" or "vanilla".
        target_source: "given" (``targets=`` argument), "model" (step I), "keywords" (the
            reply could not be parsed; noun phrases of the question), "none" (no target
            found, or the vanilla method: the whole image was used).
        final_view: how the final input was built ("image", "crop", "union", "canvas", ...).
        final_boxes: original-image pixel boxes shown in the final input.
        option_scores: logits matching only: per option, the mean log-probability of its
            text as the reply (the highest one is the answer); ``None`` otherwise.
        search_reused_from: index (in the ``answer`` call) of the question whose search
            (steps I-V) this one reused, its targets/relevance/verify passes being 0 here;
            ``None`` when it ran its own.
        notes: what was done to the input to make the model accept it (e.g. an extreme aspect
            ratio padded), empty when nothing was.
    """

    answer: str
    targets: list[str]
    question_type: int
    rois: list[list[Roi]] = field(default_factory=list)
    relevance_maps: list[Tensor] = field(default_factory=list)
    map_extents: list[Box] = field(default_factory=list)
    forward_passes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    method: str = "focus"
    target_source: str = "none"
    final_view: str = "image"
    final_boxes: list[Box] = field(default_factory=list)
    option_scores: list[float] | None = None
    search_reused_from: int | None = None
    notes: list[str] = field(default_factory=list)


def charge_batch(phase: str, owners: list, start: float, batch: Batch) -> None:
    """Charge one batched call (begun at ``start``) on ``batch`` to its prompts' questions:
    one forward pass and the prompt's tokens per prompt, and the elapsed time shared equally by
    the prompts.

    Args:
        phase: the phase the passes are counted in.
        owners: per prompt of ``batch``, the question it belongs to (anything with a
            ``result`` :class:`FocusResult`); a question may own several prompts.
        start: ``time.perf_counter()`` when the call began.
        batch: the collated prompts (their ``attention_mask`` gives the tokens).
    """
    lengths = batch.inputs["attention_mask"].sum(-1).tolist()
    charge(phase, [(owner, 1, n) for owner, n in zip(owners, lengths)], start)


def charge(phase: str, charges: list[tuple[Any, int, int]], start: float) -> None:
    """Charge ``(question, forward passes, tokens)`` items for the work begun at ``start``; the
    elapsed time is shared in proportion to the forward passes. A phase not yet in a result's
    records starts at zero there."""
    seconds = time.perf_counter() - start
    total = sum(passes for _, passes, _ in charges) or 1
    for owner, passes, tokens in charges:
        result = owner.result
        result.forward_passes[phase] = result.forward_passes.get(phase, 0) + passes
        result.tokens[phase] = result.tokens.get(phase, 0) + tokens
        result.timings[phase] = result.timings.get(phase, 0.0) + seconds * passes / total
