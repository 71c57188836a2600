"""Relevance-phase time with and without prefix reuse, at LLaVA-OneVision's sequence length.

    python benchmarks/relevance_prefix_reuse.py [--hidden 384 --layers 4 --repeats 3]
        [--out benchmarks/results/relevance_prefix_reuse_cpu.json]

A random LLaVA-OneVision-architecture model with the real model's token layout (tiles of
27 x 27 tokens, a 3 x 3 tile grid: ~7.4k tokens per existence prompt), a mid-size Qwen2
language model and a narrow vision tower, answers a question with two given targets; the
relevance phase (existence prompts, value capture, maps and proposals) is timed per question
with one full pass per target (``reuse_prefix=False``, the previous behaviour) and with the
image encoded once (``reuse_prefix=True``). Runs alternate between the two; medians reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the random-model builders

from tiny_models import build_tiny_onevision  # noqa: E402

from focus_modules import FocusConfig, FocusWrapper  # noqa: E402


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=384, help="language model width")
    parser.add_argument("--layers", type=int, default=4, help="language model depth")
    parser.add_argument("--tiles", type=int, default=3, help="local tiles per side (3: ~7.4k tokens)")
    parser.add_argument("--tile-tokens", type=int, default=27, help="tokens per tile side (27 as SigLIP-384/14)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tile = args.tile_tokens * 14
    model, processor = build_tiny_onevision(
        tile_size=tile,
        patch_size=14,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=max(1, args.hidden // 64),
        num_kv_heads=max(1, args.hidden // 256),
    )
    model = model.to(device)
    config = FocusConfig.preset("llava-onevision", n_steps=0, layers=(args.layers // 2, args.layers))
    rng = np.random.default_rng(0)
    side = args.tiles * tile
    image = Image.fromarray(rng.integers(0, 256, (side - 30, side, 3), dtype=np.uint8))
    question = "Is the red car on the left or right side of the white truck?"
    targets = [["red car", "white truck"]]
    runs = {False: [], True: []}
    out = {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for reuse in (False, True):
            fw = FocusWrapper(model, processor, config, max_new_tokens=1, reuse_prefix=reuse)
            [result] = fw.answer([image], [question], targets=targets)
            if repeat:
                runs[reuse].append(result.timings["relevance"])
            out[reuse] = result
    enc = fw.adapter.encode_existence(image, "red car")
    full_s, reuse_s = statistics.median(runs[False]), statistics.median(runs[True])
    report = {
        "benchmark": "relevance phase, 2-target question, prefix reuse vs one full pass per target",
        "device": device_name(device),
        "torch": torch.__version__,
        "model": {
            "family": "llava-onevision (random weights)",
            "lm_hidden": args.hidden,
            "lm_layers": args.layers,
            "vision_hidden": model.config.vision_config.hidden_size,
            "image_tokens": int((enc.input_ids == fw.adapter.image_token_id).sum()),
            "prompt_tokens": enc.input_ids.numel(),
            "image_size": list(image.size),
        },
        "repeats": args.repeats,
        "full_passes": {
            "seconds_median": round(full_s, 4),
            "seconds": [round(s, 4) for s in runs[False]],
            "forward_passes": out[False].forward_passes["relevance"],
            "tokens": out[False].tokens["relevance"],
        },
        "prefix_reuse": {
            "seconds_median": round(reuse_s, 4),
            "seconds": [round(s, 4) for s in runs[True]],
            "forward_passes": out[True].forward_passes["relevance"],
            "tokens": out[True].tokens["relevance"],
        },
        "speedup": round(full_s / reuse_s, 3),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
