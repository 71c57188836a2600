"""lmms-eval model ``focus``: FOCUS on any image task of lmms-eval, with its prompts and scorers.

Registered through lmms-eval's ``lmms_eval.models`` entry point (:func:`manifest`); this module
imports lmms-eval and is loaded only by it. The work is done by
:func:`focus_modules.integrations.harness.generate_until`; this class turns lmms-eval's
requests into :class:`~focus_modules.integrations.harness.HarnessRequest` tuples and FOCUS's
record of each request into the ``token_counts`` entry of lmms-eval's sample log.

    lmms-eval --model focus --model_args pretrained=llava-hf/llava-1.5-7b-hf,n_steps=8 \\
        --tasks vstar_bench,hrbench4k --batch_size 8 --log_samples --output_path runs/lmms
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from PIL import Image

from focus_modules.config import METHODS, FocusConfig
from focus_modules.integrations.harness import HarnessRequest, generate_until, generation_settings, question_for

MODEL_NAME = "focus"
# lmms-eval's own default answer budget for a task that sets none (its llava_hf model's).
DEFAULT_MAX_NEW_TOKENS = 1024
FOCUS_CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(FocusConfig))


def manifest():
    """The entry point's payload: model id ``focus`` -> :class:`FocusLmms` (lmms-eval's
    ``ModelManifest``).

    ``lmms_eval.models`` is imported here, not at the top: importing it builds lmms-eval's model
    registry, which loads this entry point; from the top of this module that would find the
    module half-initialised, and lmms-eval would leave ``focus`` out of the registry for the
    rest of the process.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.FocusLmms")


@dataclasses.dataclass
class FocusTokenCounts(TokenCounts):
    """lmms-eval's per-sample ``token_counts`` entry with FOCUS's record of the request under
    ``"focus"`` (:meth:`HarnessAnswer.log_record`); the token fields stay empty."""

    focus: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "focus": self.focus}


class FocusLmms(lmms):
    """FOCUS around a Hugging Face MLLM, as an lmms-eval simple model.

    Args (``--model_args``):
        pretrained: local model folder or hub id (any family with a FOCUS adapter).
        method: ``focus``, ``vanilla`` (the same model on the whole image, no search), or a
            search baseline: ``zoomeye``, ``vicrop-rel``, ``vicrop-grad``.
        n_steps: ROIs verified per target (Table 7 preset with this budget).
        dataset: Table 7 column of the preset: ``vstar``, ``hrbench``, ``mme-rw-lite`` or
            none (the non-V*Bench values).
        dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        attn_implementation: ``sdpa``, ``flash_attention_2`` or ``eager``.
        batch_size: questions per batched model call (lmms-eval's ``--batch_size``).
        max_new_tokens: answer budget of tasks that set none.
        progress: tqdm progress bars.
        **focus_fields: any :class:`FocusConfig` field, e.g. ``k=15`` or ``layers=[14,32]``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        method: str = "focus",
        n_steps: int = 8,
        dataset: str | None = None,
        dtype: str = "auto",
        device: str | None = "auto",
        attn_implementation: str = "sdpa",
        batch_size: int | str = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        progress: bool = True,
        max_batch_size: int | None = None,
        **focus_fields: Any,
    ) -> None:
        super().__init__()
        from focus_modules.cli import build_answerer, parse_overrides
        from focus_modules.eval.distributed import rank_and_world

        unknown = sorted(set(focus_fields) - set(FOCUS_CONFIG_FIELDS))
        if unknown:
            raise ValueError(
                f"focus model_args: unknown {unknown}; FocusConfig fields: {', '.join(FOCUS_CONFIG_FIELDS)}"
            )
        if method not in METHODS:
            raise ValueError(f"focus model_args: method must be one of {METHODS}, got {method!r}")
        if isinstance(batch_size, str) and batch_size.isdigit():  # lmms-eval's --batch_size is text
            batch_size = int(batch_size)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"focus model_args: batch_size must be a positive int, got {batch_size!r}")
        if rank_and_world()[1] > 1:
            raise NotImplementedError("the focus model runs in one process; start one lmms-eval run per GPU")
        overrides = parse_overrides([f"{name}={_override_text(value)}" for name, value in focus_fields.items()])
        self.wrapper, self.config = build_answerer(
            str(pretrained),
            dtype,
            device or "auto",
            attn_implementation,
            None if dataset in (None, "none") else dataset,
            int(n_steps),
            overrides,
        )
        self.method = method
        self.batch_size_per_gpu = batch_size
        self.max_new_tokens = int(max_new_tokens)
        self.progress = bool(progress)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        plain = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            images = _images(doc_to_visual(doc) if doc_to_visual is not None else [], task)
            max_new_tokens, until = generation_settings(gen_kwargs, self.max_new_tokens)
            question = question_for(task, doc, context) if images else ""
            plain.append(HarnessRequest(context, images, question, max_new_tokens, until))
        answers = generate_until(
            self.wrapper, plain, method=self.method, batch_size=self.batch_size, progress=self.progress
        )
        outputs = []
        for request, answer in zip(requests, answers):
            self.cache_hook.add_partial("generate_until", request.args[:2], answer.text)
            outputs.append(GenerationResult(answer.text, FocusTokenCounts(focus=answer.log_record())))
        return outputs

    def loglikelihood(self, requests: list[Instance]):
        raise NotImplementedError(
            "the focus model answers generate_until tasks only (FOCUS generates an answer after its "
            "search); this task asks for loglikelihood"
        )

    def generate_until_multi_round(self, requests: list[Instance]):
        raise NotImplementedError(
            "the focus model answers single-round generate_until tasks only; this task is multi-round"
        )


def _override_text(value: Any) -> str:
    """A model_args value as ``--set`` text: lists and ``[l,L]`` strings become ``l,L``."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).strip().strip("[]")


def _images(visuals: Any, task: str) -> list[Image.Image]:
    """The document's visuals as a flat list of PIL images (lmms-eval may nest them)."""
    flat = []
    for visual in visuals if isinstance(visuals, (list, tuple)) else [visuals]:
        flat.extend(visual if isinstance(visual, (list, tuple)) else [visual])
    for visual in flat:
        if not isinstance(visual, Image.Image):
            raise NotImplementedError(
                f"task {task!r}: the focus model answers image tasks; got a {type(visual).__name__} visual "
                "(video or audio)"
            )
    return flat
