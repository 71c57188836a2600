"""Tiny random MLLMs built offline, for tests (and later issues) — no network, no weights.

``build_tiny_llava()`` returns a ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama
language model, LLaVA-1.5 architecture) with random weights and its ``LlavaProcessor``: a
``tokenizers`` WordLevel tokenizer whose vocabulary covers every prompt of the LLaVA adapter,
a ``CLIPImageProcessor`` and the llava-hf chat template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from focus_modules.adapters import base as adapter_base
from focus_modules import targets as target_text

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


def build_tokenizer(vocab: list[str]):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {token: i for i, token in enumerate(vocab)}
    tok = Tokenizer(models.WordLevel(ids, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="removed", invert=True)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", ids["<s>"])])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
    )


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
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024, initializer_range=0.1, pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
        image_seq_length=grid * grid + (vision_feature_select_strategy == "full"),
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
        vision_feature_select_strategy=vision_feature_select_strategy, num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE if chat_template else None,
    )
    return model, processor
