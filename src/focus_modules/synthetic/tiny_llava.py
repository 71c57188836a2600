"""The tiny LLaVA-1.5 that ships with focus_modules, and the pieces of a tiny LLaVA built offline.

``load_tiny_focus_llava()`` loads the shipped checkpoint (``focus_modules/assets/tiny-focus-llava``,
trained on the synthetic scenes by ``examples/tiny_model`` in the repository; its model card says
how) and ``tiny_focus_config()`` is its FOCUS configuration. ``build_tokenizer``, the llava-hf
chat template and the token pattern let tests and examples build tiny random models without a
network: a ``tokenizers`` WordLevel tokenizer over a small vocabulary that the stock adapters
serve unchanged.

Geometry of the shipped model (why 144 px and 6 px patches): the adapter pads an image to a
square of side ``S = max(W, H)`` (1536-2048 px for the synthetic scenes) and the map has
``(144 / 6)^2 = 24 x 24`` cells of ``S / 24`` (64-85) px, LLaVA-1.5's own map size, so the
preset's ROI sides apply unchanged. On the whole image a 28-52 px object shrinks to 2-4.9 model
pixels and its mark to 1-2; an ROI of ``s_min = 3`` to ``s_max = 5`` cells is ``3-5 x S / 24`` px
wide, so the mark covers 2-11 model pixels of its crop.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# The llava-hf/llava-1.5-7b-hf chat template.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
# Words, punctuation and newlines are tokens; spaces separate them.
TOKEN_PATTERN = r"\w+|[^\w\s]|\n"


def build_tokenizer(
    vocab: list[str],
    specials: Iterable[str] = SPECIAL_TOKENS,
    bos: str | None = "<s>",
    eos: str = "</s>",
    unk: str = "<unk>",
    pad: str = "<pad>",
):
    """A fast WordLevel tokenizer over ``specials`` then ``vocab`` (words of :data:`TOKEN_PATTERN`),
    no network; ``bos`` (if any) is prepended to every text, as Llama's tokenizer does (Qwen's
    does not)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = list(specials)
    ids = {token: i for i, token in enumerate(specials + [w for w in vocab if w not in specials])}
    tok = Tokenizer(models.WordLevel(ids, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="removed", invert=True)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, ids[bos])])
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        pad_token=pad,
        model_input_names=["input_ids", "attention_mask"],
    )


# The checkpoint trained by ``examples/tiny_model/train.py`` (in the repository) and shipped in the
# package (model card: its README.md).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "tiny-focus-llava"
# How the tiny model's benchmark, demo and regression test answer multiple-choice questions, for
# vanilla and FOCUS alike: logits matching (the paper's C.5 scheme, ``--answer-scheme logits``):
# each option's text is scored as the reply. The tiny language model reads the mark when asked
# open-ended but does not learn to map it to an option letter (model card: measured per link).
TINY_ANSWER_SCHEME = "logits"


def load_tiny_focus_llava(path: str | Path = SHIPPED_CHECKPOINT):
    """``(model, processor)`` of a trained tiny model (the shipped one by default), fp32, eval
    mode, loaded with ``from_pretrained`` (no network)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing)")
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    return model, AutoProcessor.from_pretrained(path)


def tiny_focus_config(n_steps: int = 8, path: str | Path = SHIPPED_CHECKPOINT):
    """FocusConfig for a tiny checkpoint: LLaVA-1.5's V*Bench preset (Table 7) with the
    checkpoint's own ``focus_config.json`` (the settings its model card chose on validation
    scenes)."""
    from focus_modules.config import FocusConfig, read_model_settings

    settings = {k: v for k, v in read_model_settings(path).items() if k != "n_steps"}
    return FocusConfig.preset("llava-1.5", dataset="vstar", n_steps=n_steps, **settings)
