"""Tiny random MLLMs built offline, for tests — no network, no weights.

``build_tiny_llava()`` returns a ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama
language model, LLaVA-1.5 architecture) with random weights and its ``LlavaProcessor``: a
``tokenizers`` WordLevel tokenizer whose vocabulary covers every prompt of the LLaVA adapter,
a ``CLIPImageProcessor`` and the llava-hf chat template. ``build_tiny_onevision()`` (SigLIP +
Qwen2, anyres tiles, llava-hf layout), ``build_tiny_qwen2_5_vl()``, ``build_tiny_qwen3_vl()``,
``build_tiny_internvl()`` and ``build_tiny_gemma3()`` do the same for LLaVA-OneVision, Qwen2.5-VL,
Qwen3-VL, InternVL and Gemma 3, with their own processors (torchvision needed) and chat templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
import torch

from focus_modules import targets as target_text
from focus_modules.adapters import base as adapter_base
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
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer(prompt_vocabulary(extra_words))
    vocab = tokenizer.get_vocab()
    grid = image_size // patch_size
    if vision_tower == "siglip":
        from transformers import SiglipVisionConfig

        vision = SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        )
    else:
        vision = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=32,
        )
    additional = 1 if vision_tower == "clip" else 0
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024,
        initializer_range=0.1,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        image_seq_length=grid * grid + additional - (vision_feature_select_strategy == "default"),
        vision_feature_select_strategy=vision_feature_select_strategy,
        vision_feature_layer=-2,
    )
    config.pad_token_id = vocab["<pad>"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["</s>"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        num_additional_image_tokens=additional,
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
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
    tokenizer = build_tokenizer(
        prompt_vocabulary([CHAT_WORDS, _multi_image_words()]),
        specials,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk="<|endoftext|>",
    )
    vocab = tokenizer.get_vocab()
    grid = tile_size // patch_size
    pinpoints = [[tile_size * i, tile_size * j] for i in range(1, max_tiles + 1) for j in range(1, max_tiles + 1)]
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=tile_size,
        patch_size=patch_size,
    )
    text = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=32768,
        initializer_range=0.1,
        pad_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"],
    )
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"],
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    config.pad_token_id = vocab["<|endoftext|>"]
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": tile_size, "width": tile_size}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=grid * grid,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
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

    specials = (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    )
    tokenizer = build_tokenizer(
        prompt_vocabulary([CHAT_WORDS, _multi_image_words()]),
        specials,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk="<|endoftext|>",
    )
    vocab = tokenizer.get_vocab()
    head_dim = hidden_size // num_heads
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            out_hidden_size=hidden_size,
            fullatt_block_indexes=[1],
        ),
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=4096,
            initializer_range=0.1,
            pad_token_id=vocab["<|endoftext|>"],
            eos_token_id=vocab["<|im_end|>"],
            bos_token_id=vocab["<|endoftext|>"],
            rope_scaling={"type": "mrope", "mrope_section": [head_dim // 8, head_dim // 8, head_dim // 4]},
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=max_pixels)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    return model, processor


# --- Qwen3-VL, InternVL and Gemma 3 ---------------------------------------------------------------

# The Qwen/Qwen3-VL-*-Instruct chat template, reduced to what the adapters render (no tools, no
# reasoning turns): contents in order, no default system turn.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen3_vl(
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_pixels: int = 32 * 32 * 64,
    seed: int = 0,
):
    """A random Qwen3-VL-architecture model and its processor: 16-px patches merged 2 x 2 (a token
    per 32 x 32 pixels of the resized image, as the real model), learned position embeddings
    resampled to each image, deepstack features from two vision layers added after the first two
    decoder layers, interleaved M-RoPE; ``max_pixels`` small so the maps stay small.

    Returns:
        ``(model, processor)``: ``Qwen3VLForConditionalGeneration`` in eval mode (fp32, sdpa) and
        ``Qwen3VLProcessor``.
    """
    try:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
    except ImportError:
        pytest.skip("Qwen3-VL is in transformers >= 4.57")
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    specials = (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    )
    tokenizer = build_tokenizer(
        prompt_vocabulary([CHAT_WORDS, _multi_image_words()]),
        specials,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk="<|endoftext|>",
    )
    vocab = tokenizer.get_vocab()
    head_dim = hidden_size // num_heads
    config = Qwen3VLConfig(
        vision_config=dict(
            depth=3,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden_size,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
        ),
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            head_dim=head_dim,
            max_position_embeddings=4096,
            initializer_range=0.1,
            pad_token_id=vocab["<|endoftext|>"],
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_interleaved": True,
                "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8],
            },
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    # Qwen3-VL's preprocessor: 16-px patches, mean = std = 0.5
    image_processor = Qwen2VLImageProcessor(
        min_pixels=32 * 32 * 4, max_pixels=max_pixels, patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    return model, processor


def with_named_tokens(tokenizer, **named):
    """``tokenizer`` re-wrapped with named special tokens (e.g. ``start_image_token="<img>"``),
    readable as attributes and ``..._id`` as processors expect them."""
    return type(tokenizer)(
        tokenizer_object=tokenizer.backend_tokenizer,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        unk_token=tokenizer.unk_token,
        pad_token=tokenizer.pad_token,
        extra_special_tokens=named,
        model_input_names=["input_ids", "attention_mask"],
    )


# The OpenGVLab/InternVL3-*-hf chat template: contents in order, an image as "<IMG_CONTEXT>\n".
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_internvl(
    *,
    tile_size: int = 64,
    patch_size: int = 8,
    max_patches: int = 6,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
):
    """A random InternVL-architecture model (InternViT tower with a CLS token + Qwen2 language
    model) and its processor, laid out like ``OpenGVLab/InternVL3-*-hf``: the image stretched onto
    ``cols x rows`` tiles of ``tile_size`` pixels (``1 <= cols * rows <= max_patches``) plus a
    thumbnail, ``(tile_size // patch_size)^2`` patches per tile pixel-shuffled 2 x 2 into
    ``(tile_size // patch_size // 2)^2`` tokens (4 x 4 here, 16 x 16 in the real 448-px model).

    Returns:
        ``(model, processor)``: ``InternVLForConditionalGeneration`` in eval mode (fp32, sdpa) and
        ``InternVLProcessor``.
    """
    try:
        from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor
    except ImportError:
        pytest.skip("InternVL is in transformers >= 4.52")
    from transformers import GotOcr2ImageProcessor

    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>")
    tokenizer = build_tokenizer(
        prompt_vocabulary([CHAT_WORDS, _multi_image_words()]),
        specials,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk="<|endoftext|>",
    )
    tokenizer = with_named_tokens(
        tokenizer,
        start_image_token="<img>",
        end_image_token="</img>",
        context_image_token="<IMG_CONTEXT>",
        video_token="<video>",
    )
    vocab = tokenizer.get_vocab()
    tokens_per_tile = (tile_size // patch_size // 2) ** 2
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=[tile_size, tile_size],
            patch_size=[patch_size, patch_size],
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=len(vocab),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=4096,
            initializer_range=0.1,
            pad_token_id=vocab["<|endoftext|>"],
            eos_token_id=vocab["<|im_end|>"],
        ),
        image_token_id=vocab["<IMG_CONTEXT>"],
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    image_processor = GotOcr2ImageProcessor(
        size={"height": tile_size, "width": tile_size},
        crop_to_patches=True,
        min_patches=1,
        max_patches=max_patches,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(),
        image_seq_length=tokens_per_tile,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    return model, processor


# The google/gemma-3-*-it chat template, reduced to what the adapters render: no system turn,
# an image as "<start_of_image>", text trimmed. (The tokenizer prepends <bos> itself here.)
GEMMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
GEMMA3_WORDS = "Here is the original image and here are some crops to help you see better model"


def build_tiny_gemma3(
    *,
    image_size: int = 128,
    patch_size: int = 8,
    tokens_per_side: int = 8,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
):
    """A random Gemma 3-architecture model (SigLIP tower + Gemma 3 language model with sliding and
    global attention layers) and its processor, laid out like ``google/gemma-3-*-it``: every image
    (and every pan-and-scan crop) stretched to ``image_size`` squared,
    ``(image_size // patch_size)^2`` patches average-pooled to ``tokens_per_side^2`` tokens (8 x 8
    here, 16 x 16 from 64 x 64 patches in the real 896-px model).

    Returns:
        ``(model, processor)``: ``Gemma3ForConditionalGeneration`` in eval mode (fp32, sdpa) and
        ``Gemma3Processor``.
    """
    try:
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor
    except ImportError:
        pytest.skip("Gemma 3 is in transformers >= 4.50")

    specials = (
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    )
    tokenizer = build_tokenizer(
        prompt_vocabulary([CHAT_WORDS, GEMMA3_WORDS, _multi_image_words()]),
        specials,
        bos="<bos>",
        eos="<end_of_turn>",
        pad="<pad>",
        unk="<unk>",
    )
    tokenizer = with_named_tokens(
        tokenizer, boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>"
    )
    vocab = tokenizer.get_vocab()
    config = Gemma3Config(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            head_dim=hidden_size // num_heads,
            query_pre_attn_scalar=hidden_size // num_heads,
            max_position_embeddings=4096,
            initializer_range=0.1,
            sliding_window=256,
            layer_types=["sliding_attention"] * (num_layers - 1) + ["full_attention"],
            pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<bos>"],
            eos_token_id=vocab["<end_of_turn>"],
        ),
        mm_tokens_per_image=tokens_per_side**2,
        boi_token_index=vocab["<start_of_image>"],
        eoi_token_index=vocab["<end_of_image>"],
        image_token_index=vocab["<image_soft_token>"],
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["<end_of_turn>"]
    image_processor = Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=tokens_per_side**2,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    return model, processor
