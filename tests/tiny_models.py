"""Tiny random MLLMs built offline, for tests (and later issues) — no network, no weights.

``build_tiny_llava()`` returns a ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama
language model, LLaVA-1.5 architecture) with random weights and its ``LlavaProcessor``: a
``tokenizers`` WordLevel tokenizer whose vocabulary covers every prompt of the LLaVA adapter,
a ``CLIPImageProcessor`` and the llava-hf chat template. ``build_tiny_onevision()`` (SigLIP +
Qwen2, anyres tiles, llava-hf layout) and ``build_tiny_qwen2_5_vl()`` do the same for
LLaVA-OneVision and Qwen2.5-VL, with their own processors (torchvision needed) and chat templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
import torch

from focus_modules.adapters import base as adapter_base
from focus_modules import targets as target_text
from focus_modules.synthetic.tiny_llava import LLAVA_CHAT_TEMPLATE, SPECIAL_TOKENS, TOKEN_PATTERN, build_tokenizer

# Words the tests' questions, options and targets use.
TEST_WORDS = """
What is the color of red blue green yellow white black cat dog car truck ball bench bird birds
cup umbrella Which side left right How many are there in image Is on or to a an relative
position square circle triangle tree house person people Count count number shape A B C D E
Yes No yes no Objects Question all none
"""


def words_of(text: str) -> list[str]:
    return re.findall(TOKEN_PATTERN, text)


def prompt_vocabulary(extra_words: Iterable[str] = ()) -> list[str]:
    """Every token of the adapter's prompt templates, the chat template and the test words,
    plus ``extra_words``; special tokens first, in a fixed order."""
    texts = [
        target_text.target_prompt("{question}"),
        adapter_base.EXISTENCE_TEMPLATE,
        adapter_base.OPTIONS_INSTRUCTION,
        "USER ASSISTANT : ( ) " + " ".join(adapter_base.OPTION_LETTERS),
        TEST_WORDS,
        " ".join(extra_words),
    ]
    vocab = list(SPECIAL_TOKENS)
    for text in texts:
        for word in words_of(text):
            if word not in vocab:
                vocab.append(word)
    return vocab


def build_tiny_llava(
    *,
    image_size: int = 96,
    patch_size: int = 8,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    extra_words: Iterable[str] = (),
    chat_template: bool = True,
    vision_feature_select_strategy: str = "default",
    vision_tower: str = "clip",
    seed: int = 0,
):
    """A random LLaVA-1.5-architecture model and its processor.

    Args:
        image_size, patch_size: the CLIP tower's input side and patch size; the map is
            ``(image_size // patch_size)`` squared (12 x 12 by default).
        num_layers, hidden_size, num_heads, num_kv_heads: the Llama language model (grouped
            query attention when ``num_kv_heads < num_heads``).
        extra_words: more vocabulary (e.g. a training set's words).
        chat_template: give the processor the llava-hf chat template (else none).
        vision_feature_select_strategy: ``"default"`` (drop CLS, as LLaVA-1.5) or ``"full"``.
        vision_tower: ``"clip"`` (a CLS token before the patches) or ``"siglip"`` (none; the
            processor then counts no additional image token).
        seed: weights are drawn from ``torch.manual_seed(seed)``.

    Returns:
        ``(model, processor)``: ``LlavaForConditionalGeneration`` in eval mode (fp32, sdpa) and
        ``LlavaProcessor``.
    """
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = build_tokenizer(prompt_vocabulary(extra_words))
    vocab = tokenizer.get_vocab()
    grid = image_size // patch_size
    if vision_tower == "siglip":
        from transformers import SiglipVisionConfig

        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    image_size=image_size, patch_size=patch_size)
    else:
        vision = CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch_size, projection_dim=32,
        )
    additional = 1 if vision_tower == "clip" else 0
    text = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024, initializer_range=0.1, pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
        image_seq_length=grid * grid + additional - (vision_feature_select_strategy == "default"),
        vision_feature_select_strategy=vision_feature_select_strategy, vision_feature_layer=-2,
    )
    config.pad_token_id = vocab["<pad>"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["</s>"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy, num_additional_image_tokens=additional,
        chat_template=LLAVA_CHAT_TEMPLATE if chat_template else None,
    )
    return model, processor


# --- LLaVA-OneVision and Qwen2.5-VL ------------------------------------------------------------

# The llava-hf/llava-onevision-qwen2-*-ov-hf chat template (images first, then the text).
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The Qwen/Qwen2.5-VL-*-Instruct chat template (contents in order; a default system turn).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_WORDS = "system user assistant You are helpful Picture im_start im_end"


def _multi_image_words() -> str:
    from focus_modules.adapters.multi_image import multi_image_preamble

    return multi_image_preamble(1) + " " + multi_image_preamble(2)


def build_tiny_onevision(
    *,
    tile_size: int = 48,
    patch_size: int = 8,
    max_tiles: int = 6,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
):
    """A random LLaVA-OneVision-architecture model (SigLIP tower + Qwen2 language model) and its
    processor, laid out like llava-hf's ``llava-onevision-qwen2-*-ov-hf``: anyres tiles of
    ``tile_size`` pixels on the pinpoints ``{1..max_tiles}^2 x tile_size`` (the 384-px model's
    ``{1..6}^2 x 384``), ``(tile_size // patch_size)^2`` tokens per tile (6 x 6 by default, 27 x 27
    in the real model), ``anyres_max_9`` (bilinear shrink above ~9 tiles' worth of tokens), one
    newline token per local row, "full" feature selection.

    Returns:
        ``(model, processor)``: ``LlavaOnevisionForConditionalGeneration`` in eval mode (fp32,
        sdpa) and ``LlavaOnevisionProcessor``.
    """
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, Qwen2Config,
                              SiglipVisionConfig)
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
    tokenizer = build_tokenizer(
        prompt_vocabulary([CHAT_WORDS, _multi_image_words()]), specials, bos=None, eos="<|im_end|>",
        pad="<|endoftext|>", unk="<|endoftext|>")
    vocab = tokenizer.get_vocab()
    grid = tile_size // patch_size
    pinpoints = [[tile_size * i, tile_size * j] for i in range(1, max_tiles + 1) for j in range(1, max_tiles + 1)]
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=tile_size, patch_size=patch_size)
    text = Qwen2Config(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096, initializer_range=0.1, pad_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
    )
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"], image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full",
        vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
    )
    config.pad_token_id = vocab["<|endoftext|>"]
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    image_processor = LlavaOnevisionImageProcessor(size={"height": tile_size, "width": tile_size},
                                                   image_grid_pinpoints=pinpoints)
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=grid * grid, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_CHAT_TEMPLATE,
    )
    return model, processor


def build_tiny_qwen2_5_vl(
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_pixels: int = 28 * 28 * 64,
    seed: int = 0,
):
    """A random Qwen2.5-VL-architecture model and its processor: 14-px patches merged 2 x 2 (a
    token per 28 x 28 pixels of the resized image, as the real model), window attention in the
    vision tower, M-RoPE in the language model; ``max_pixels`` small so the maps stay small.

    Returns:
        ``(model, processor)``: ``Qwen2_5_VLForConditionalGeneration`` in eval mode (fp32, sdpa)
        and ``Qwen2_5_VLProcessor``.
    """
    try:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    except ImportError:
        pytest.skip("Qwen2.5-VL is in transformers >= 4.49")
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
    tokenizer = build_tokenizer(
        prompt_vocabulary([CHAT_WORDS, _multi_image_words()]), specials, bos=None, eos="<|im_end|>",
        pad="<|endoftext|>", unk="<|endoftext|>")
    vocab = tokenizer.get_vocab()
    head_dim = hidden_size // num_heads
    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, out_hidden_size=hidden_size,
                           fullatt_block_indexes=[1]),
        text_config=dict(
            vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
            max_position_embeddings=4096, initializer_range=0.1, pad_token_id=vocab["<|endoftext|>"],
            eos_token_id=vocab["<|im_end|>"], bos_token_id=vocab["<|endoftext|>"],
            rope_scaling={"type": "mrope", "mrope_section": [head_dim // 8, head_dim // 8, head_dim // 4]},
        ),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=max_pixels)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
    return model, processor
