"""Windowed relevance maps on 8K images: the shipped tiny model, global map vs sliding windows.

    python benchmarks/tiny_model_windowed.py [--n 20] [--canvas 8192] [--window 2048] [--overlap 0.5]
        [--work runs/tiny-windowed] [--threads 1]

writes held-out attribute questions on large canvases (objects keep their 28-52 px, so on an
8K canvas one is ~0.5 % of the image side) and answers them through the public commands::

    python -m focus_modules.synthetic --out WORK/data --n N --seed 9001 --canvas 8192 --families attribute
    focus eval --model CKPT --dataset vstar --data WORK/data --categories direct_attributes \\
        --method vanilla|focus --n-steps 2 --answer-scheme logits [--set window_size=2048 \\
        --set window_overlap=0.5 --set window_combine=mean|max]

(the tiny model's answer scheme: ``focus_modules.synthetic.tiny_llava.TINY_ANSWER_SCHEME``), then
summarises each result file with the harness's own scoring (``focus_modules.eval.metrics.summarize``):
strict accuracy, map hit rate (the argmax cell of the target's map, in the map's own cells, within
one cell of the GT box), ROI recall (any proposed ROI / the ROI the answer was built from covers
>= 50 % of the GT box), relevance and search forward passes, seconds per question. Writes
``benchmarks/results/tiny_model_windowed.json`` and prints a table. Seed 9001 scenes
``(9001, family, i)`` with this canvas are never trained on (training draws ``(7001, s, i)`` on
the default 1536-2048 px canvases).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from tiny_model_heldout import eval_command, run, synthetic_command  # benchmarks/: the public commands

from focus_modules.eval.metrics import summarize
from focus_modules.ops.stitch_maps import window_count
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, TINY_ANSWER_SCHEME

RESULTS = Path(__file__).resolve().parent / "results" / "tiny_model_windowed.json"
REPORTED = (
    "n",
    "accuracy",
    "map_hit_rate",
    "roi_recall",
    "top_roi_recall",
    "fp_search_mean",
    "fp_per_phase_mean",
    "seconds_mean",
    "errors",
)


def methods(window: int, overlap: float) -> list[tuple[str, list[str]]]:
    windowed = ["--set", f"window_size={window}", "--set", f"window_overlap={overlap}"]
    focus = ["--method", "focus", "--n-steps", "2"]
    return [
        ("vanilla", ["--method", "vanilla"]),
        ("FOCUS global map", focus),
        ("FOCUS windows, mean", [*focus, *windowed, "--set", "window_combine=mean"]),
        ("FOCUS windows, max", [*focus, *windowed, "--set", "window_combine=max"]),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--n", type=int, default=20, help="attribute questions (one 8K scene each)")
    parser.add_argument("--seed", type=int, default=9001, help="held-out dataset seed")
    parser.add_argument(
        "--canvas", type=int, default=8192, help="largest canvas side (python -m focus_modules.synthetic)"
    )
    parser.add_argument("--window", type=int, default=2048, help="window side in pixels (FocusConfig.window_size)")
    parser.add_argument("--overlap", type=float, default=0.5, help="FocusConfig.window_overlap")
    parser.add_argument("--work", type=Path, default=Path("runs/tiny-windowed"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every command (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every command
    data = args.work / f"data_canvas{args.canvas}_n{args.n}_seed{args.seed}"
    generate = synthetic_command(data, args.n, args.seed, "--canvas", str(args.canvas), "--families", "attribute")
    commands, outputs = [generate], {}
    for name, flags in methods(args.window, args.overlap):
        out = args.work / f"{name.replace(' ', '_').replace(',', '')}.jsonl"
        outputs[name] = out
        commands.append(
            eval_command(
                args.model, data, flags, TINY_ANSWER_SCHEME, args.batch_size, out, categories="direct_attributes"
            )
        )
    written = sorted(data.glob("direct_attributes/*.json")) if data.is_dir() else []
    for command in commands[1:] if len(written) == args.n else commands:  # the set is deterministic
        run(command)
    records = [json.loads(path.read_text()) for path in sorted(data.glob("direct_attributes/*.json"))]
    windows = [window_count(tuple(r["image_size"]), args.window, args.overlap) for r in records]
    table = {}
    for name, out in outputs.items():
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        summary = summarize(rows)
        table[name] = {key: summary[key] for key in REPORTED}
    shown = [shlex.join(["python" if c == sys.executable else c for c in command]) for command in commands]
    report = {
        "model": str(args.model),
        "questions": f"{args.n} attribute questions, seed {args.seed}, canvas sides in "
        f"[{3 * args.canvas // 4}, {args.canvas}] px",
        "image_sizes": sorted({tuple(r["image_size"]) for r in records}),
        "window": {"size": args.window, "overlap": args.overlap, "windows_per_image_mean": sum(windows) / len(windows)},
        "answer_scheme": TINY_ANSWER_SCHEME,
        "commands": shown,
        "machine": f"{platform.machine()} CPU, {args.threads} thread(s), Python {platform.python_version()}",
        "methods": table,
    }
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print("| method | attribute accuracy | map hit | ROI recall any / top | relevance FPs | search FPs | s/question |")
    print("|---|---|---|---|---|---|---|")
    for name, t in table.items():
        recall = "–" if t["roi_recall"] is None else f"{t['roi_recall']:.1f} / {t['top_roi_recall']:.1f}"
        hit = "–" if t["map_hit_rate"] is None else f"{t['map_hit_rate']:.1f}"
        relevance = t["fp_per_phase_mean"].get("relevance", 0.0)
        print(
            f"| {name} | {t['accuracy']:.1f} | {hit} | {recall} | {relevance:.2f} | {t['fp_search_mean']:.2f} | "
            f"{t['seconds_mean']:.2f} |"
        )


if __name__ == "__main__":
    main()
