"""Host time of the relevance phase's prompt encoding on large images, per target vs shared.

    python benchmarks/existence_preprocessing.py [--sizes 2048x1536 3840x2160 7680x4320]
        [--targets 2] [--repeats 3] [--out benchmarks/results/existence_preprocessing_cpu.json]

``benchmarks/e2e.py`` showed most of LLaVA-1.5's time outside the model going to the image
processor (padding a 4K image to a square, converting and resizing it). The existence prompts
of one question differ only in their text, so ``encode_existence_targets`` preprocesses the
image once for all targets; before, every target's prompt preprocessed it again. Both give
identical encodings (checked here). LLaVA-1.5-7B's processor and tokenizer layout (CLIP
336 px); no model weights are needed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import build, make_image  # noqa: E402

from focus_modules.adapters import adapter_for  # noqa: E402

TARGETS = ["red car", "white truck", "blue umbrella", "dog"]


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["2048x1536", "3840x2160", "7680x4320"])
    parser.add_argument("--targets", type=int, default=2, choices=range(1, len(TARGETS) + 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, processor = build("llava-1.5", 1, 1, True, torch.float32, torch.device("cpu"))
    adapter = adapter_for(model, processor)
    targets = TARGETS[: args.targets]
    rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        image = make_image(width, height, seed=0)
        separate = [adapter.encode_existence(image, t) for t in targets]
        shared = adapter.encode_existence_targets(image, targets)
        for a, b in zip(separate, shared):
            assert torch.equal(a.input_ids, b.input_ids)
            assert torch.equal(a.model_inputs["pixel_values"], b.model_inputs["pixel_values"])
        before = timed(lambda image=image: [adapter.encode_existence(image, t) for t in targets], args.repeats)
        after = timed(lambda image=image: adapter.encode_existence_targets(image, targets), args.repeats)
        rows.append(
            {
                "image": size,
                "targets": len(targets),
                "per_target_seconds": round(before, 4),
                "shared_seconds": round(after, 4),
                "speedup": round(before / after, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "benchmark": "existence-prompt encoding of one question (LLaVA-1.5 processor), host time",
        "device": f"CPU ({platform.machine()}, 1 thread)",
        "repeats": args.repeats,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
