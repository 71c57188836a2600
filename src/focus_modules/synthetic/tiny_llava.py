"""A tiny LLaVA-1.5-architecture model for the synthetic scenes, built offline from configs.

``build_tiny_focus_llava()`` returns an untrained ``LlavaForConditionalGeneration`` (small CLIP
vision tower, small Llama language model) and its ``LlavaProcessor`` (a ``tokenizers``
WordLevel tokenizer over the synthetic vocabulary and every word of the LLaVA adapter's prompts,
a ``CLIPImageProcessor`` and the llava-hf chat template), so the stock LLaVA-1.5 adapter serves
it unchanged. ``python -m focus_modules.synthetic.train`` trains it.

Geometry (why 96 px and 6 px patches): the adapter pads an image to a square of side
``S = max(W, H)`` (1024-2048 px here) and the map has ``(96 / 6)^2 = 16 x 16`` cells of
``S / 16`` (64-128) px. On the whole image a 16-48 px object shrinks to 0.75-4.5 model pixels,
too few to tell a star from a circle; an ROI of ``s_max = 5`` (``s_min = 3``) cells is
``3-5 x S / 16`` px wide, so the same object fills 4-24 model pixels of its crop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from focus_modules import targets as target_text
from focus_modules.adapters import base as adapter_base

from .crops import EXISTENCE_TEMPLATE
from .questions import ATTRIBUTE_TEMPLATE, COUNTING_TEMPLATE, SPATIAL_TEMPLATE
from .shapes import COLORS, MARK_COLORS, PLURALS, SHAPES

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

IMAGE_SIZE = 96
PATCH_SIZE = 6


def vocabulary(extra_words: Iterable[str] = ()) -> list[str]:
    """Special tokens, then every token of the adapter's prompts (step-I few-shot prompt,
    existence prompt, option lines and instruction, chat roles) and of the synthetic questions,
    answers and targets, in a fixed order."""
    texts = [
        target_text.target_prompt("{question}"),
        adapter_base.EXISTENCE_TEMPLATE,
        EXISTENCE_TEMPLATE,
        adapter_base.OPTIONS_INSTRUCTION,
        "USER ASSISTANT : ( ) , " + " ".join(adapter_base.OPTION_LETTERS),
        ATTRIBUTE_TEMPLATE, COUNTING_TEMPLATE, SPATIAL_TEMPLATE,
        " ".join(SHAPES), " ".join(PLURALS.values()), " ".join(COLORS), " ".join(MARK_COLORS),
        "left right all Yes No mark background " + " ".join(str(n) for n in range(10)),
        " ".join(extra_words),
    ]
    vocab = list(SPECIAL_TOKENS)
    for text in texts:
        for word in re.findall(TOKEN_PATTERN, text):
            if word not in vocab:
                vocab.append(word)
    return vocab


def build_tokenizer(vocab: list[str], specials: Iterable[str] = SPECIAL_TOKENS, bos: str | None = "<s>",
                    eos: str = "</s>", unk: str = "<unk>", pad: str = "<pad>"):
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
        tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad,
        model_input_names=["input_ids", "attention_mask"],
    )


def build_tiny_focus_llava(
    *,
    vision_hidden: int = 96,
    vision_layers: int = 4,
    hidden_size: int = 128,
    num_layers: int = 6,
    num_heads: int = 4,
    num_kv_heads: int = 4,
    seed: int = 0,
):
    """An untrained tiny LLaVA-1.5 (CLIP 96 px / 6 px patches -> 16 x 16 map; Llama LM).

    Returns:
        ``(model, processor)``: ``LlavaForConditionalGeneration`` (fp32, sdpa) with weights
        drawn from ``torch.manual_seed(seed)``, and its ``LlavaProcessor``.
    """
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = build_tokenizer(vocabulary())
    vocab = tokenizer.get_vocab()
    grid = IMAGE_SIZE // PATCH_SIZE
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024, pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"], image_seq_length=grid * grid,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    config.pad_token_id = vocab["<pad>"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["</s>"]
    model.generation_config.bos_token_id = vocab["<s>"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


# The checkpoint trained by ``python -m focus_modules.synthetic.train`` and shipped in the
# package (model card: its README.md).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "tiny-focus-llava"
# Decoder layers whose values build the relevance map: the last half of the 6-layer LM, as the
# paper's "last 25-60 %" advice (A.3) for a model outside Table 7.
FOCUS_LAYERS = (3, 6)


def make_checkpoint_portable(folder: str | Path) -> None:
    """Rewrite a checkpoint that transformers 5.x saved so that transformers 4.46+ loads it too.

    5.x saves the CLIP tower's weights as ``vision_tower.encoder...`` and the image processor
    inside ``processor_config.json``; 4.46 expects the llava-hf layout
    (``vision_tower.vision_model.encoder...``, ``preprocessor_config.json``,
    ``chat_template.json``, the tokenizer class ``PreTrainedTokenizerFast``) and would otherwise
    start from a random vision tower with only a warning. 5.x reads the llava-hf layout as well
    (it converts hub checkpoints on load).
    """
    import json

    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    prefix = "vision_tower."
    renamed = {
        (prefix + "vision_model." + k[len(prefix):] if k.startswith(prefix) and not k.startswith(prefix + "vision_model.")
         else k): v
        for k, v in state.items()
    }
    save_file(renamed, weights, metadata={"format": "pt"})
    processor_config = json.loads((folder / "processor_config.json").read_text())
    image_processor = processor_config.pop("image_processor", None)
    if image_processor is not None:
        image_processor.setdefault("processor_class", processor_config.get("processor_class", "LlavaProcessor"))
        (folder / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2) + "\n")
        (folder / "processor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    if tokenizer_config.get("tokenizer_class") == "TokenizersBackend":  # 5.x's name for a fast tokenizer
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    template = folder / "chat_template.jinja"
    if template.is_file():
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": template.read_text()}, indent=2) + "\n")


def load_tiny_focus_llava(path: str | Path = SHIPPED_CHECKPOINT):
    """``(model, processor)`` of a trained tiny model (the shipped one by default), fp32, eval
    mode, loaded with ``from_pretrained`` (no network)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing)")
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    return model, AutoProcessor.from_pretrained(path)


def tiny_focus_config(n_steps: int = 8):
    """FocusConfig for the tiny model: LLaVA-1.5's V*Bench preset (Table 7) with
    :data:`FOCUS_LAYERS`."""
    from focus_modules.config import FocusConfig

    return FocusConfig.preset("llava-1.5", dataset="vstar", n_steps=n_steps, layers=FOCUS_LAYERS)
