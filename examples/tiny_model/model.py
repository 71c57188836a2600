"""The tiny LLaVA-1.5 architecture trained by ``train.py``, built offline from configs, and the
checkpoint layout it is saved in.

``build_tiny_focus_llava()`` returns an untrained ``LlavaForConditionalGeneration`` (small CLIP
vision tower, small Llama language model) and its ``LlavaProcessor`` (a WordLevel tokenizer over
the synthetic vocabulary and every word of the LLaVA adapter's prompts, a ``CLIPImageProcessor``
and the llava-hf chat template), so the stock LLaVA-1.5 adapter serves it unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from focus_modules import targets as target_text
from focus_modules.adapters import base as adapter_base
from focus_modules.synthetic import COLORS, MARK_COLORS, PLURALS, SHAPES
from focus_modules.synthetic.questions import ATTRIBUTE_TEMPLATE, COUNTING_TEMPLATE, SPATIAL_TEMPLATE
from focus_modules.synthetic.tiny_llava import LLAVA_CHAT_TEMPLATE, SPECIAL_TOKENS, TOKEN_PATTERN, build_tokenizer

IMAGE_SIZE = 96
PATCH_SIZE = 6


def vocabulary(extra_words: Iterable[str] = ()) -> list[str]:
    """Special tokens, then every token of the adapter's prompts (step-I few-shot prompt,
    existence prompt, option lines and instruction, chat roles) and of the synthetic questions,
    answers and targets, in a fixed order."""
    texts = [
        target_text.target_prompt("{question}"),
        adapter_base.EXISTENCE_TEMPLATE,
        adapter_base.OPTIONS_INSTRUCTION,
        "USER ASSISTANT : ( ) , " + " ".join(adapter_base.OPTION_LETTERS),
        ATTRIBUTE_TEMPLATE,
        COUNTING_TEMPLATE,
        SPATIAL_TEMPLATE,
        " ".join(SHAPES),
        " ".join(PLURALS.values()),
        " ".join(COLORS),
        " ".join(MARK_COLORS),
        "left right all Yes No mark background " + " ".join(str(n) for n in range(10)),
        " ".join(extra_words),
    ]
    vocab = list(SPECIAL_TOKENS)
    for text in texts:
        for word in re.findall(TOKEN_PATTERN, text):
            if word not in vocab:
                vocab.append(word)
    return vocab


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
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer(vocabulary())
    vocab = tokenizer.get_vocab()
    grid = IMAGE_SIZE // PATCH_SIZE
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        image_seq_length=grid * grid,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    config.pad_token_id = vocab["<pad>"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["</s>"]
    model.generation_config.bos_token_id = vocab["<s>"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def set_image_size(model, processor, image_size: int) -> None:
    """Give a (trained) tiny model a vision input of ``image_size`` pixels, in place.

    The CLIP tower's learned position embeddings are resized bicubically from the old patch grid
    to the new one (the class position kept as it is), which is how a pretrained ViT is moved to
    a higher resolution before fine-tuning; the configs and the image processor follow. The
    language model needs no new weights (rotary positions); its context grows to hold the longer
    image block. 144 px gives LLaVA-1.5's own 24 x 24 map with 6 px patches.
    """
    import torch
    from torch import nn

    vision = model.config.vision_config
    if image_size % vision.patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {vision.patch_size}")
    old, new = vision.image_size // vision.patch_size, image_size // vision.patch_size
    embeddings = next(m for m in model.model.vision_tower.modules() if hasattr(m, "position_embedding"))
    weight = embeddings.position_embedding.weight.data
    grid = weight[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    resized = torch.cat([weight[:1], grid.permute(0, 2, 3, 1).reshape(new * new, -1)])
    embeddings.position_embedding = nn.Embedding(1 + new * new, weight.shape[1])
    embeddings.position_embedding.weight.data.copy_(resized)
    embeddings.num_patches, embeddings.num_positions, embeddings.image_size = new * new, 1 + new * new, image_size
    embeddings.register_buffer("position_ids", torch.arange(1 + new * new)[None], persistent=False)
    vision.image_size = image_size
    model.config.image_seq_length = new * new
    text = model.config.get_text_config()
    text.max_position_embeddings = max(text.max_position_embeddings, 2 * (new * new + 1) + 512)
    processor.image_processor.size = {"shortest_edge": image_size}
    processor.image_processor.crop_size = {"height": image_size, "width": image_size}


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
        (
            prefix + "vision_model." + k[len(prefix) :]
            if k.startswith(prefix) and not k.startswith(prefix + "vision_model.")
            else k
        ): v
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
