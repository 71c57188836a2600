"""Evaluation protocols: the prompt a question is asked with and how an answer is read.

Two protocols, selectable per run (``focus eval --protocol``):

* ``"paper"`` (A.2, the paper's numbers): the model adapter's own prompt (the question, one
  ``(A) option`` line per option, the family's letter instruction) and the **strict** match:
  the whole answer must be the letter (:func:`focus_modules.eval.metrics.strict_letter`).
* ``"lmms-eval"``: lmms-eval's prompt of each task (:func:`lmms_eval_prompt`), with the
  options in the order the dataset gives them.

Whatever the protocol, every row is also scored with lmms-eval's answer extraction
(:func:`lmms_eval_letter`), so its numbers can be put beside that harness's tables. This module
is the one home of lmms-eval's prompts and extraction rules (also for an lmms-eval model
plugin); they are re-implemented from the harness's task definitions (``vstar_bench``,
``hrbench``, ``mme_realworld``), rule for rule, including their quirks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from focus_modules.config import PROTOCOLS
from focus_modules.eval.datasets import OPTION_LETTERS

__all__ = ["PROTOCOLS", "lmms_eval_letter", "lmms_eval_prompt"]

# lmms-eval's instructions, verbatim.
VSTAR_INSTRUCTION = "Answer with the option's letter from the given choices directly."
HRBENCH_INSTRUCTION = "Answer the option letter directly."
MME_CHOICES_HEADER = "The choices are listed below:"
MME_INSTRUCTION = (
    "Select the best answer to the above multiple-choice question based on the image. Respond with only the "
    "letter (A, B, C, D, or E) of the correct option.\nThe best answer is: "
)


def lmms_eval_prompt(dataset: str, question: str, options: Sequence[str]) -> str:
    """The user text lmms-eval asks a question of ``dataset`` with (its ``doc_to_text``).

    Args:
        dataset: ``"vstar"``, ``"hrbench"`` or ``"mme-rw-lite"``.
        question: the question without options.
        options: option texts in the order shown (lettered A, B, ...).

    Returns:
        V*Bench: the question, ``"A. option"`` lines, then ``VSTAR_INSTRUCTION``; HR-Bench: the
        question, ``"A. option"`` lines, then ``HRBENCH_INSTRUCTION``; MME-RealWorld: the
        question, ``" The choices are listed below:"``, ``"(A) option"`` lines, then
        ``MME_INSTRUCTION`` (which ends with ``"The best answer is: "``).
    """
    lettered = list(zip(OPTION_LETTERS, options))
    if dataset == "vstar":
        lines = [question.strip(), *(f"{letter}. {text.strip()}" for letter, text in lettered)]
        return "\n".join(lines) + "\n" + VSTAR_INSTRUCTION
    if dataset == "hrbench":
        lines = [question.strip(), *(f"{letter}. {text}" for letter, text in lettered)]
        return "\n".join(lines) + "\n" + HRBENCH_INSTRUCTION
    if dataset == "mme-rw-lite":
        choices = "\n".join(f"({letter}) {text}" for letter, text in lettered)
        return f"{question} {MME_CHOICES_HEADER}\n{choices}\n{MME_INSTRUCTION}"
    raise ValueError(f"no lmms-eval prompt for dataset {dataset!r}")


def lmms_eval_letter(dataset: str, answer: str | None, options: Sequence[str]) -> str | None:
    """The option letter lmms-eval reads from ``answer`` (its ``process_results``), or ``None``.

    * V*Bench: the first of these that matches the upper-cased answer: a letter A-D at the
      start; "ANSWER/CHOICE/OPTION (IS)" then a letter; ``(X)``; ``X.``/``X)``/``X]``; a
      standalone letter; else the only A-D letter in the text.
    * HR-Bench: the option letter that appears as the only standalone letter among the
      options (punctuation removed); if none appears (nor the judge's "Z"), the only option
      whose text the answer contains (lower case). lmms-eval then asks a GPT judge about
      answers neither rule resolves; no judge runs here, so those count as unanswered.
    * MME-RealWorld: answer prefixes ("The best answer is", ...) removed; more than ten words
      without a capital A-E gives nothing; else the first capital A-E anywhere in the text
      (so "Bus" reads as B, as in lmms-eval); else the letter X whose ``"(x)"`` contains the
      whole lower-cased answer (so an empty answer reads as A, as in lmms-eval).
    """
    if answer is None:
        return None
    if dataset == "vstar":
        return _vstar_letter(answer)
    if dataset == "hrbench":
        return _hrbench_letter(answer, options)
    if dataset == "mme-rw-lite":
        return _mme_letter(answer, options)
    raise ValueError(f"no lmms-eval answer extraction for dataset {dataset!r}")


_VSTAR_PATTERNS = [
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"^([A-D])\s*[\.)\]]*",
        r"(?:THE\s+)?(?:ANSWER|CHOICE|OPTION)(?:\s+IS)?[\s:]+([A-D])",
        r"\(([A-D])\)",
        r"([A-D])\s*(?:\.|\)|])",
        r"(?:^|\s)([A-D])(?:\s|$)",
    )
]


def _vstar_letter(answer: str) -> str | None:
    text = answer.strip().upper()
    for pattern in _VSTAR_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    letters = re.findall(r"[A-D]", text)
    return letters[0] if len(letters) == 1 else None


# HR-Bench refusals lmms-eval maps to "no option" before matching.
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def _hrbench_letter(answer: str, options: Sequence[str]) -> str | None:
    letters = OPTION_LETTERS[: len(options)]
    if any(refusal in answer for refusal in _REFUSALS):
        return None
    words = re.sub(r"[.()\[\],:;!*#{}]", " ", answer).split()
    found = [letter for letter in letters if letter in words]
    if len(found) == 1:
        return found[0]
    if found or "Z" in words:  # several letters; or the judge's "none of them" letter
        return None
    lowered = answer.lower()
    contained = [letter for letter, text in zip(letters, options) if str(text).lower() in lowered]
    return contained[0] if len(contained) == 1 else None


_MME_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
)


def _mme_letter(answer: str, options: Sequence[str]) -> str | None:
    text = answer.strip()
    for prefix in _MME_PREFIXES:  # two pairs are fused, as in lmms-eval (missing commas)
        text = text.replace(prefix, "")
    if len(text.split()) > 10 and not re.search("[ABCDE]", text):
        return None
    match = re.search(r"[ABCDE]", text)
    if match:
        return match.group(0)
    for letter in "ABCDE":  # the whole answer inside "(a)" ... "(e)", e.g. "a" or "(c"
        if text.lower() in f"({letter.lower()})":
            return letter
    return None
