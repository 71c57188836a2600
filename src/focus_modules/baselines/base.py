"""The interface of a visual-search baseline: search a group of questions, pick each one's view."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Protocol

from PIL import Image

from focus_modules.adapters.base import FinalView, ModelAdapter
from focus_modules.results import FocusResult


class SearchTask(Protocol):
    """One question handed to a :class:`SearchMethod` (the wrapper's per-question record).

    Attributes:
        image: the RGB image (already padded to the model's aspect-ratio limit, if it was).
        question: the question text.
        options: the option texts, ``None`` for an open-ended question.
        given_targets: the target objects the caller named (``FocusWrapper.answer(targets=)``),
            ``None`` when the method finds its own; a method that names targets uses these.
        result: the question's record; the method fills ``targets``, ``question_type``,
            ``rois``, ``target_source`` and, where it builds any, ``relevance_maps`` and
            ``map_extents``, and charges every model call it makes with
            :func:`focus_modules.results.charge_batch` / :func:`~focus_modules.results.charge`
            under its own phase names.
        view: the view the final answer is built from, set by the method (``None``: the whole
            image).
    """

    image: Image.Image
    question: str
    options: list[str] | None
    given_targets: list[str] | None
    result: FocusResult
    view: FinalView | None


class SearchMethod(ABC):
    """A visual-search method in FOCUS's harness.

    Forward passes are counted as FOCUS counts them: one per prompt the model processes (a
    prefill over image and text; a generation counts one), per phase. A backward pass is not
    a forward pass: it is charged under a phase whose name ends in ``"backward"``, and a pass
    that continues a cached prefix under one ending in ``"continuation"``.

    Args:
        adapter: the model's adapter (prompts, image encoding, model calls).
    """

    #: the method's name in ``focus_modules.config.METHODS``.
    name: ClassVar[str]
    #: the phases the method charges, in the order they run (step VI's ``"answer"`` excluded);
    #: the wrapper puts each in every result's records at 0 before the search.
    phases: ClassVar[tuple[str, ...]]

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter

    @abstractmethod
    def search(self, tasks: Sequence[SearchTask]) -> None:
        """Search every task's image and set its ``view`` and ``result`` (see :class:`SearchTask`)."""
