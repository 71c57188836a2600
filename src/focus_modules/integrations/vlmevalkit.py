"""A FOCUS model object for VLMEvalKit, which has no plugin mechanism: hand it to VLMEvalKit's
``infer_data_job`` in place of one of its own models. Imports no VLMEvalKit.

VLMEvalKit calls ``set_dump_image``, ``use_custom_prompt`` and then ``generate(message,
dataset)`` once per question, with the dataset's own prompt as a list of
``{"type": "image" | "text", "value": ...}`` items. FOCUS runs steps I-V on the image and the
question found in the prompt (:func:`~focus_modules.integrations.harness.generic_question`) and
step VI on the prompt's text verbatim, so VLMEvalKit's answer matching applies unchanged.

Illustration (needs VLMEvalKit and a loaded model; not run as a doctest)::

    from vlmeval.dataset import build_dataset
    from vlmeval.inference import infer_data_job
    model = FocusVLMEvalKitModel(wrapper)
    infer_data_job(model, work_dir="runs/vlmeval", model_name="focus-llava-1.5", dataset=build_dataset("HRBench4K"))
    model.records[0]["fp_search"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from focus_modules.integrations.harness import HarnessRequest, generate_until, generic_question
from focus_modules.wrapper import FocusWrapper


class FocusVLMEvalKitModel:
    """FOCUS with VLMEvalKit's model interface (one question per ``generate`` call).

    Args:
        wrapper: the FOCUS model.
        method: ``"focus"`` or ``"vanilla"``.
        max_new_tokens: answer budget.

    Attributes:
        records: one :meth:`HarnessAnswer.log_record` per ``generate`` call, in call order
            (forward passes per phase, ``fp_search``, targets, final view).
    """

    is_api = False

    def __init__(self, wrapper: FocusWrapper, method: str = "focus", max_new_tokens: int = 64) -> None:
        self.wrapper = wrapper
        self.method = method
        self.max_new_tokens = max_new_tokens
        self.dump_image = None
        self.records: list[dict[str, Any]] = []

    def set_dump_image(self, dump_image) -> None:
        """VLMEvalKit's function that writes a dataset row's image(s) to disk (unused: the
        dataset's ``build_prompt`` already did)."""
        self.dump_image = dump_image

    def use_custom_prompt(self, dataset: str | None) -> bool:
        """Always ``False``: step VI answers the dataset's own prompt."""
        return False

    def generate(self, message: str | Sequence[dict[str, Any]], dataset: str | None = None) -> str:
        """Answer one VLMEvalKit message (a string, or ``image`` / ``text`` items).

        Raises:
            NotImplementedError: an item of another type (video, audio), or several images.
        """
        items = [{"type": "text", "value": message}] if isinstance(message, str) else list(message)
        unsupported = sorted({item["type"] for item in items} - {"image", "text"})
        if unsupported:
            raise NotImplementedError(f"FOCUS answers image and text messages; got {unsupported} items")
        images = [item["value"] for item in items if item["type"] == "image"]
        text = "\n".join(item["value"] for item in items if item["type"] == "text")
        question = generic_question(text) if images else ""
        [answer] = generate_until(
            self.wrapper, [HarnessRequest(text, images, question, self.max_new_tokens)], method=self.method
        )
        self.records.append(answer.log_record())
        return answer.text
