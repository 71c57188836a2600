"""FOCUS as the generation backend of a benchmark harness (lmms-eval, VLMEvalKit), without
importing one.

A harness hands over requests made of its own prompt text (the "context", options and answer
instruction included), the document's images and its generation settings. FOCUS runs steps
I-V on the image and the bare question (:func:`question_for` takes it out of the document), and
step VI on the harness's context verbatim, so the harness's answer parser and scorer apply
unchanged. Requests without an image are answered by the model on the text alone.

Illustration (needs a loaded model and a harness; not run as a doctest)::

    requests = [HarnessRequest(context, [image], question_for(task, doc, context), 16, ())]
    [answer] = generate_until(wrapper, requests, batch_size=8)
    answer.text, answer.log_record()["fp_search"]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from focus_modules.results import FocusResult, forward_pass_total, search_forward_passes
from focus_modules.wrapper import FocusWrapper

# lmms-eval's image placeholder; a model plugin places the images itself, so it is removed.
IMAGE_PLACEHOLDER = "<image>"
# A line that starts a multiple-choice option: "A. red", "(B) blue", "C) green", "D: yellow".
OPTION_LINE = re.compile(r"^\s*(?:\([A-Z]\)|[A-Z][.):])\s*\S")


class HarnessRequest(NamedTuple):
    """One generation request of a harness, as plain data.

    Attributes:
        context: the harness's prompt text; step VI answers it verbatim (after
            :func:`strip_image_placeholders`).
        images: the document's images (PIL images, paths or uint8 arrays); empty: a text-only
            request, answered by the model on ``context`` alone.
        question: what steps I-V search for (:func:`question_for`).
        max_new_tokens: generation budget of the answer.
        until: stop strings; the answer is cut before the first one it contains.
    """

    context: str
    images: Sequence[Any]
    question: str
    max_new_tokens: int
    until: tuple[str, ...] = ()


@dataclass
class HarnessAnswer:
    """The answer to one :class:`HarnessRequest`.

    Attributes:
        text: the generated text, cut at the first stop string.
        result: FOCUS's record of the request (targets, ROIs, forward passes, timings);
            ``None`` for a text-only request.
    """

    text: str
    result: FocusResult | None

    def log_record(self) -> dict[str, Any]:
        """JSON-able summary for a harness's per-sample log: ``method`` (one of
        ``focus_modules.config.METHODS``, or "text-only"), ``forward_passes`` (phase -> prompts
        processed, Sec. A.2), ``fp_search`` (the visual-search FPs of Sec. 4.1: every forward
        pass but step I's and the answer's), ``fp_total`` (forward passes of every phase),
        ``targets``, ``question_type``, ``final_view``, ``final_boxes`` (original-image pixels),
        ``seconds`` (the request's share of the model calls)."""
        if self.result is None:
            return {"method": "text-only", "forward_passes": {"answer": 1}, "fp_search": 0, "fp_total": 1}
        result = self.result
        forward_passes = {str(phase): int(count) for phase, count in result.forward_passes.items()}
        return {
            "method": result.method,
            "forward_passes": forward_passes,
            "fp_search": search_forward_passes(forward_passes),
            "fp_total": forward_pass_total(forward_passes),
            "targets": list(result.targets),
            "question_type": result.question_type,
            "final_view": result.final_view,
            "final_boxes": [[round(float(v), 1) for v in box] for box in result.final_boxes],
            "seconds": round(sum(result.timings.values()), 4),
        }


# ----------------------------------------------------------------------------- questions


def strip_image_placeholders(context: str) -> str:
    """``context`` without lmms-eval's ``<image>`` placeholders (and the line break after one)."""
    return re.sub(re.escape(IMAGE_PLACEHOLDER) + r"[ \t]*\n?", "", context)


def generic_question(context: str) -> str:
    """The question of a prompt the plugin has no reader for: the lines before the first option
    line (``A. ...``, ``(A) ...``) and its header line (one ending in ``:``, e.g. ``Options:``),
    or the whole prompt when nothing precedes the options."""
    lines = strip_image_placeholders(context).strip().splitlines()
    first_option = next((i for i, line in enumerate(lines) if OPTION_LINE.match(line)), len(lines))
    before = lines[:first_option]
    if first_option < len(lines) and before and before[-1].rstrip().endswith(":"):
        before = before[:-1]
    question = "\n".join(before).strip()
    return question or "\n".join(lines).strip()


def _doc_field(name: str, benchmark: str) -> Callable[[Mapping[str, Any], str], str]:
    def read(doc: Mapping[str, Any], context: str) -> str:
        if name not in doc:
            raise ValueError(f"a {benchmark} document needs a {name!r} field; this one has {sorted(doc)}")
        return str(doc[name])

    return read


def _vstar_question(doc: Mapping[str, Any], context: str) -> str:
    """V*Bench (lmms-eval ``vstar_bench``): ``text`` is the question followed by ``(A) ...``."""
    return _doc_field("text", "V*Bench")(doc, context).split("(A)")[0]


#: lmms-eval task-name prefix -> reader of the bare question from ``(doc, context)``.
#: Add an entry for a benchmark of your own; other tasks use :func:`generic_question`.
QUESTION_READERS: dict[str, Callable[[Mapping[str, Any], str], str]] = {
    "vstar_bench": _vstar_question,
    "hrbench": _doc_field("question", "HR-Bench"),
    "mmerealworld": _doc_field("question", "MME-RealWorld"),
}


def question_for(task: str, doc: Mapping[str, Any], context: str) -> str:
    """The question steps I-V search for: the task's reader (:data:`QUESTION_READERS`, by
    task-name prefix) on its document, else :func:`generic_question` on the context.

    Raises:
        ValueError: the question comes out empty, or a known benchmark's field is missing.
    """
    reader = next((read for prefix, read in QUESTION_READERS.items() if task.startswith(prefix)), None)
    question = (reader(doc, context) if reader is not None else generic_question(context)).strip()
    if not question:
        raise ValueError(f"task {task!r}: found no question in {context!r}")
    return question


# ----------------------------------------------------------------------------- generation settings


def generation_settings(gen_kwargs: Mapping[str, Any], default_max_new_tokens: int) -> tuple[int, tuple[str, ...]]:
    """``(max_new_tokens, until)`` from a harness's generation keyword arguments.

    FOCUS decodes greedily (every step, deterministic), so a request for sampling or beam
    search is refused rather than silently answered greedily; ``top_p``/``top_k`` are ignored
    (they do not change greedy decoding).

    Raises:
        ValueError: sampling (``do_sample=True`` or ``temperature > 0``), ``num_beams > 1``, a
            non-positive ``max_new_tokens`` or a malformed ``until``.
    """
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
        raise ValueError(
            f"FOCUS decodes greedily; the task asks for sampling ({dict(gen_kwargs)}); "
            "run it with --gen_kwargs temperature=0,do_sample=False"
        )
    if int(gen_kwargs.get("num_beams") or 1) > 1:
        raise ValueError(f"FOCUS decodes greedily; the task asks for beam search ({dict(gen_kwargs)})")
    max_new_tokens = gen_kwargs.get("max_new_tokens")
    max_new_tokens = default_max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    until = gen_kwargs.get("until") or ()
    if isinstance(until, str):
        until = (until,)
    if not all(isinstance(stop, str) for stop in until):
        raise ValueError(f"until must be a string or a list of strings, got {until!r}")
    return max_new_tokens, tuple(stop for stop in until if stop)


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    end = min((i for i in (text.find(stop) for stop in until) if i >= 0), default=len(text))
    return text[:end]


# ----------------------------------------------------------------------------- the loop


def generate_until(
    wrapper: FocusWrapper,
    requests: Sequence[HarnessRequest],
    method: str = "focus",
    batch_size: int | None = None,
    progress: bool = False,
) -> list[HarnessAnswer]:
    """Answer every request: steps I-V on its image and question, step VI on its context.

    Requests are grouped by ``max_new_tokens`` (one generation budget per batched call) and
    answered through :meth:`FocusWrapper.answer` with ``batch_size``; text-only requests are
    generated in batches of ``batch_size`` on their context alone. Decoding is greedy, so the
    answers do not depend on the batching.

    Args:
        wrapper: the FOCUS model.
        requests: the harness's requests, in its order.
        method: ``"focus"`` or ``"vanilla"`` (step VI on the whole image, no search).
        batch_size: questions per batched call; ``None``: all of a group at once.
        progress: tqdm progress bars.

    Returns:
        One :class:`HarnessAnswer` per request, in order.

    Raises:
        NotImplementedError: a request with more than one image (FOCUS searches one image).
    """
    for i, request in enumerate(requests):
        if len(request.images) > 1:
            raise NotImplementedError(
                f"FOCUS searches one image per question; request {i} has {len(request.images)} images"
            )
    answers: list[HarnessAnswer | None] = [None] * len(requests)
    budgets = sorted({request.max_new_tokens for request in requests})
    saved_budget = wrapper.max_new_tokens
    try:
        for budget in budgets:
            wrapper.max_new_tokens = budget
            chosen = [i for i, r in enumerate(requests) if r.max_new_tokens == budget]
            visual = [i for i in chosen if requests[i].images]
            if visual:
                results = wrapper.answer(
                    [requests[i].images[0] for i in visual],
                    [requests[i].question for i in visual],
                    method=method,
                    batch_size=batch_size,
                    progress=progress,
                    answer_prompts=[strip_image_placeholders(requests[i].context) for i in visual],
                )
                for i, result in zip(visual, results):
                    answers[i] = HarnessAnswer(cut_at_stops(result.answer, requests[i].until), result)
            text_only = [i for i in chosen if not requests[i].images]
            step = batch_size or max(len(text_only), 1)
            for start in range(0, len(text_only), step):
                group = text_only[start : start + step]
                texts = _generate_text(wrapper, [strip_image_placeholders(requests[i].context) for i in group], budget)
                for i, text in zip(group, texts):
                    answers[i] = HarnessAnswer(cut_at_stops(text, requests[i].until), None)
    finally:
        wrapper.max_new_tokens = saved_budget
    return answers


def _generate_text(wrapper: FocusWrapper, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers of the model on text-only prompts (one batched call)."""
    adapter = wrapper.adapter
    with torch.inference_mode():
        return adapter.generate(adapter.collate([adapter.encode_text(p) for p in prompts]), max_new_tokens)
