"""End-to-end speed of vanilla and FOCUS on full-size architectures with random weights.

    python benchmarks/e2e.py [--models llava-1.5 llava-onevision qwen2.5-vl] [--steps 1 4 8]
        [--batch-sizes 1 8] [--questions 8] [--image-sizes 2048x1536 3840x2160 7680x4320]
        [--layers N] [--vision-layers N] [--scale full|tiny] [--compile] [--out RESULTS.json]

Each model is built offline from its published architecture (LLaVA-1.5-7B: CLIP ViT-L/14-336 +
Vicuna-7B; LLaVA-OneVision-7B: SigLIP-so400m + Qwen2-7B, anyres up to 6 x 6 tiles of 384 px;
Qwen2.5-VL-7B) with random weights -- timing does not depend on the weights' values -- and a
word-level tokenizer over the prompts' words (the vocabulary size, hence the LM head, is the
real model's). ``--layers N`` keeps only the first N decoder layers (``--vision-layers`` the
same for the vision tower) so that the CPU can run it; ``--scale tiny`` shrinks every width
(CI smoke run). Random weights never emit end-of-sequence, so every generation runs to its
budget (``--target-tokens``, ``--answer-tokens``): an upper bound on decoding time. Nor do they
answer "Yes", so with overrun (the preset) every proposed ROI gets verified, one round at a
time: the worst case; ``--no-overrun`` verifies exactly ``n_steps`` per target.

For every (model, method, batch size) it answers ``--questions`` generated questions about
generated 2-8K images after one warm-up question, and writes per question: seconds per phase
(``FocusResult.timings``) and in total, forward passes and prompt tokens per phase, seconds
inside the model's forward (generation steps included) and the share of time outside it
(image preprocessing, maps, proposals, crops, Python), peak memory, and with ``--compile`` the
graphs dynamo captured (first = recompiles included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # chat templates, prompt vocabulary

from focus_modules import FocusConfig, FocusWrapper, RoiProposer  # noqa: E402
from focus_modules.results import PHASES  # noqa: E402

MODELS = ("llava-1.5", "llava-onevision", "qwen2.5-vl")
# Generated images (WIDTHxHEIGHT, cycled over the questions) and generation budgets by default.
IMAGE_SIZES = ("2048x1536", "3840x2160", "7680x4320")
TARGET_TOKENS = 32
ANSWER_TOKENS = 8
# What a tiny-scale run keeps of each architecture (CI smoke run).
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
QUESTIONS = [
    ("What is the color of the umbrella?", ["red", "blue", "white", "black"]),
    ("Is the red car on the left or right side of the white truck?", ["left", "right"]),
    ("What is the color of the dog?", ["yellow", "black", "white", "green"]),
    ("How many birds are there in the image?", ["1", "2", "3", "4"]),
]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


# --- models -------------------------------------------------------------------------------------


def _tokenizer(specials, **kwargs):
    from tiny_models import CHAT_WORDS, _multi_image_words, prompt_vocabulary

    from focus_modules.synthetic.tiny_llava import build_tokenizer

    words = [CHAT_WORDS, _multi_image_words()] + [q for q, _ in QUESTIONS] + [" ".join(o) for _, o in QUESTIONS]
    return build_tokenizer(prompt_vocabulary(words), specials, **kwargs)


def _shrink(config: dict, layers: int | None, tiny: dict | None, layers_key: str = "num_hidden_layers") -> dict:
    config = dict(config)
    if tiny:
        config.update(tiny)
    if layers is not None:
        if not 1 <= layers <= config[layers_key]:
            raise ValueError(f"layers must be in 1..{config[layers_key]}, got {layers}")
        config[layers_key] = layers
    return config


def build_llava(layers, vision_layers, tiny):
    """LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf's config)."""
    from tiny_models import LLAVA_CHAT_TEMPLATE
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from focus_modules.synthetic.tiny_llava import SPECIAL_TOKENS

    tokenizer = _tokenizer(SPECIAL_TOKENS)
    vocab = tokenizer.get_vocab()
    vision = _shrink(
        dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
        vision_layers,
        tiny and TINY_VISION,
    )
    text = _shrink(
        dict(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
        ),
        layers,
        tiny and TINY_TEXT,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(
            **text, pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"]
        ),
        image_token_index=vocab["<image>"],
        image_seq_length=576,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor, vocab["<pad>"], vocab["</s>"]


def build_onevision(layers, vision_layers, tiny):
    """LLaVA-OneVision-7B (llava-hf/llava-onevision-qwen2-7b-ov-hf's config)."""
    from tiny_models import ONEVISION_CHAT_TEMPLATE
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
    tokenizer = _tokenizer(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk="<|endoftext|>")
    vocab = tokenizer.get_vocab()
    pinpoints = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
    vision = _shrink(
        dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=26,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
        ),
        vision_layers,
        tiny and TINY_VISION,
    )
    text = _shrink(
        dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
        ),
        layers,
        tiny and TINY_TEXT,
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**vision),
        text_config=Qwen2Config(**text, pad_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"]),
        image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"],
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": 384, "width": 384}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_CHAT_TEMPLATE,
    )
    return model, processor, vocab["<|endoftext|>"], vocab["<|im_end|>"]


def build_qwen(layers, vision_layers, tiny):
    """Qwen2.5-VL-7B (Qwen/Qwen2.5-VL-7B-Instruct's config)."""
    from tiny_models import QWEN2_5_VL_CHAT_TEMPLATE
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
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
    tokenizer = _tokenizer(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk="<|endoftext|>")
    vocab = tokenizer.get_vocab()
    text = _shrink(
        dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=128000,
            rope_theta=1000000.0,
        ),
        layers,
        tiny and TINY_TEXT,
    )
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
    )
    if tiny:
        vision.update(hidden_size=32, intermediate_size=64, num_heads=2)
    if vision_layers is not None:
        vision["depth"] = vision_layers
        vision["fullatt_block_indexes"] = [i for i in vision["fullatt_block_indexes"] if i < vision_layers] or [
            vision_layers - 1
        ]
    config = Qwen2_5_VLConfig(
        vision_config=dict(vision, out_hidden_size=text["hidden_size"]),
        text_config=dict(
            text,
            pad_token_id=vocab["<|endoftext|>"],
            eos_token_id=vocab["<|im_end|>"],
            bos_token_id=vocab["<|endoftext|>"],
            rope_scaling={"type": "mrope", "mrope_section": [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]},
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    return model, processor, vocab["<|endoftext|>"], vocab["<|im_end|>"]


BUILDERS = {"llava-1.5": build_llava, "llava-onevision": build_onevision, "qwen2.5-vl": build_qwen}


def build(family: str, layers: int | None, vision_layers: int | None, tiny: bool, dtype, device):
    torch.manual_seed(0)
    with torch.device(device):
        model, processor, pad_id, eos_id = BUILDERS[family](layers, vision_layers, tiny)
    model = model.to(dtype).eval()
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    return model, processor


def focus_config(family: str, n_steps: int, depth: int, overrun: bool) -> FocusConfig:
    """The family's preset with its share of last layers on the (possibly truncated) ``depth``-layer model."""
    preset = FocusConfig.preset(family, n_steps=n_steps)
    start = min(round(preset.layers[0] * depth / (32 if family == "llava-1.5" else 28)), depth - 1)
    return dataclasses.replace(preset, layers=(start, depth), overrun=overrun)


# --- data ---------------------------------------------------------------------------------------


def make_image(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random texture with a few flat rectangles (content does not change timing)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8))
    image = small.resize((width, height), Image.BILINEAR)
    for _ in range(6):
        w, h = int(rng.integers(16, 64)), int(rng.integers(16, 64))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        image.paste(tuple(int(c) for c in rng.integers(0, 256, 3)), (x, y, x + w, y + h))
    return image


def parse_sizes(texts) -> list[tuple[int, int]]:
    """``["2048x1536", ...]`` -> ``[(2048, 1536), ...]`` (width, height)."""
    return [tuple(int(v) for v in text.lower().split("x")) for text in texts]


def make_questions(n: int, sizes: list[tuple[int, int]], offset: int = 0):
    items = []
    for i in range(offset, offset + n):
        question, options = QUESTIONS[i % len(QUESTIONS)]
        items.append((make_image(*sizes[i % len(sizes)], seed=i), question, options))
    return items


# --- timing -------------------------------------------------------------------------------------


class ModelTimer:
    """Seconds spent inside ``model.forward`` (every call, generation steps included)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.seconds = 0.0
        self._start = None
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._handles = [model.register_forward_pre_hook(self._enter), model.register_forward_hook(self._exit)]

    def _enter(self, *args):
        self._sync()
        self._start = time.perf_counter()

    def _exit(self, *args):
        self._sync()
        self.seconds += time.perf_counter() - self._start

    def remove(self):
        for handle in self._handles:
            handle.remove()


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"gpu_max_allocated_bytes": torch.cuda.max_memory_allocated(device)}
    # the process's peak resident set since it started (not reset between runs)
    return {"process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def graphs_captured() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def run(fw: FocusWrapper, items, method: str, batch_size: int, device: torch.device, compiled: bool) -> dict:
    images, questions, options = map(list, zip(*items))
    fw.answer(images[:1], questions[:1], options[:1], method=method)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    graphs_before = graphs_captured() if compiled else 0
    timer = ModelTimer(fw.model, device)
    start = time.perf_counter()
    try:
        results = fw.answer(images, questions, options, method=method, batch_size=batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        timer.remove()
    total = time.perf_counter() - start
    n = len(results)

    def per_question(field):
        return {phase: round(sum(getattr(r, field)[phase] for r in results) / n, 5) for phase in PHASES}

    report = {
        "seconds_per_question": {**per_question("timings"), "total": round(total / n, 5)},
        "forward_passes_per_question": per_question("forward_passes"),
        "tokens_per_question": per_question("tokens"),
        "model_seconds_per_question": round(timer.seconds / n, 5),
        "outside_model_share": round(1 - timer.seconds / total, 4),
        "targets_per_question": round(sum(len(r.targets) for r in results) / n, 3),
        **peak_memory(device),
    }
    if compiled:
        report["graphs_captured_during_timed_run"] = graphs_captured() - graphs_before
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 4, 8], help="FOCUS n_steps to run")
    parser.add_argument("--no-vanilla", action="store_true", help="skip the vanilla baseline")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--questions", type=int, default=None, help="questions per run (default: largest batch)")
    parser.add_argument(
        "--image-sizes",
        nargs="+",
        default=list(IMAGE_SIZES),
        help="WIDTHxHEIGHT of the generated images, cycled over the questions",
    )
    parser.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers")
    parser.add_argument("--vision-layers", type=int, default=None, help="keep the first N vision-tower layers")
    parser.add_argument("--scale", choices=("full", "tiny"), default="full", help="tiny: every width shrunk (CI)")
    parser.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on the CPU by default")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--target-tokens", type=int, default=TARGET_TOKENS, help="step I's generation budget")
    parser.add_argument("--answer-tokens", type=int, default=ANSWER_TOKENS, help="the final answer's generation budget")
    parser.add_argument(
        "--no-overrun",
        action="store_true",
        help="verify exactly n_steps ROIs (random weights answer No, so overrun verifies every ROI)",
    )
    parser.add_argument("--compile", action="store_true", help="FocusWrapper(compile=True)")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (eager: dynamo's graph capture alone, to count recompiles fast)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    sizes = parse_sizes(args.image_sizes)
    n_questions = args.questions or max(args.batch_sizes)
    methods = ([] if args.no_vanilla else [("vanilla", None)]) + [("focus", n) for n in args.steps]
    import transformers

    report = {
        "benchmark": "end-to-end seconds per question, random weights",
        "device": device_name(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "scale": args.scale,
        "layers": args.layers,
        "vision_layers": args.vision_layers,
        "image_sizes": args.image_sizes,
        "questions_per_run": n_questions,
        "generation_budget": {"targets": args.target_tokens, "answer": args.answer_tokens},
        "overrun": not args.no_overrun,
        "compile": args.compile and args.compile_backend,
        "runs": [],
    }
    items = make_questions(n_questions, sizes)
    for family in args.models:
        model, processor = build(family, args.layers, args.vision_layers, args.scale == "tiny", dtype, device)
        depth = model.config.text_config.num_hidden_layers
        fw = None
        for method, n_steps in methods:
            config = focus_config(family, n_steps or 1, depth, overrun=not args.no_overrun)
            if fw is None:  # one wrapper per model: compiling happens once, with its hooks attached
                fw = FocusWrapper(
                    model,
                    processor,
                    config,
                    max_new_tokens=args.answer_tokens,
                    target_max_new_tokens=args.target_tokens,
                    compile={"backend": args.compile_backend} if args.compile else False,
                )
            else:  # same layers (same hooks); n_steps and k change the verification and proposals
                fw.config, fw.proposer = config, RoiProposer.from_config(config)
            for batch_size in args.batch_sizes:
                entry = {
                    "model": f"{family}-7b",
                    "method": method,
                    "n_steps": n_steps,
                    "batch_size": batch_size,
                    "layers": depth,
                    "focus_layers": list(config.layers),
                }
                entry.update(run(fw, items, method, batch_size, device, args.compile))
                print(json.dumps(entry), flush=True)
                report["runs"].append(entry)
        del model, processor, fw
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
