"""Every method of the harness on the shipped tiny model: accuracy against search forward passes.

    python benchmarks/tiny_model_methods.py [--n 50] [--seed 9001] [--work runs/tiny-methods]

runs, through the public commands only (as ``benchmarks/tiny_model_heldout.py`` does)::

    python -m focus_modules.synthetic --out WORK/data --n N --seed SEED
    focus eval --model CKPT --dataset vstar --data WORK/data --categories all --method METHOD \\
        --answer-scheme logits --device cpu --out WORK/METHOD.jsonl ...
    focus plot WORK/*.jsonl --out benchmarks/results/tiny_model_methods.png

for vanilla, FOCUS at n_steps 1, 2, 4, 8, ZoomEye, ViCrop rel-att and grad-att, on one CPU
thread. Writes
``benchmarks/results/tiny_model_methods.json``: per method the strict accuracy per category,
mean search forward passes, mean forward passes per phase, seconds per question, and the
checkpoint's path and the sha256 of its model.safetensors; and the plot (the paper's Fig. 3).
Seed 9001 scenes are held out (never trained on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from tiny_model_heldout import eval_command, run, synthetic_command

from focus_modules.eval.metrics import summarize
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, TINY_ANSWER_SCHEME

RESULTS = Path(__file__).resolve().parent / "results"
# (name, focus eval flags), in the order they are run and plotted.
METHODS = (
    ("vanilla", ["--method", "vanilla"]),
    *((f"focus n_steps={n}", ["--method", "focus", "--n-steps", str(n)]) for n in (1, 2, 4, 8)),
    ("zoomeye", ["--method", "zoomeye"]),
    ("vicrop-rel", ["--method", "vicrop-rel"]),
    ("vicrop-grad", ["--method", "vicrop-grad"]),
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def method_record(rows: list[dict]) -> dict:
    """Accuracy per category (and all), mean search FPs, mean FPs per phase, s/question."""
    overall = summarize(rows)
    per_category = {c: group["accuracy"] for c, group in overall["per_category"].items()}
    return {
        "n": overall["n"],
        "errors": overall["errors"],
        "accuracy": {"all": overall["accuracy"], **per_category},
        "fp_search_mean": overall["fp_search_mean"],
        "fp_per_phase_mean": overall["fp_per_phase_mean"],
        "seconds_per_question": overall["seconds_mean"],
        "roi_recall": overall["roi_recall"],
        "top_roi_recall": overall["top_roi_recall"],
        "map_hit_rate": overall["map_hit_rate"],
        "questions_searched": sum(1 for row in rows if row.get("targets")),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--n", type=int, default=50, help="questions per family (default 50)")
    parser.add_argument("--seed", type=int, default=9001, help="held-out dataset seed")
    parser.add_argument("--work", type=Path, default=Path("runs/tiny-methods"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "tiny_model_methods.json")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every command: one CPU thread
    data = args.work / f"data_n{args.n}_seed{args.seed}"
    commands = []
    if sum(1 for _ in data.glob("*/*.json")) != 3 * args.n:  # the set is deterministic
        commands.append(synthetic_command(data, args.n, args.seed))
    outputs = {}
    for name, flags in METHODS:
        out = args.work / (name.replace(" ", "_").replace("=", "") + ".jsonl")
        outputs[name] = out
        commands.append(
            eval_command(args.model, data, flags, TINY_ANSWER_SCHEME, args.batch_size, out, "--no-progress")
        )
    plot = args.out.with_suffix(".png")
    labels = [flag for name in outputs for flag in ("--label", name)]
    commands.append(
        ["focus", "plot", *map(str, outputs.values()), *labels, "--out", str(plot), "--title", "tiny model"]
    )
    for command in commands:
        run(command)
    records = {
        name: method_record([json.loads(line) for line in out.read_text().splitlines() if line.strip()])
        for name, out in outputs.items()
    }
    report = {
        "checkpoint": str(args.model),
        "checkpoint_sha256": sha256(args.model / "model.safetensors"),
        "questions": f"{args.n} per family, seed {args.seed}",
        "answer_scheme": TINY_ANSWER_SCHEME,
        "threads": 1,
        "commands": [shlex.join(["python" if c == sys.executable else c for c in command]) for command in commands],
        "machine": f"{platform.machine()} CPU, {platform.python_version()}",
        "methods": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print("| method | accuracy (all) | search FPs | s/question |")
    print("|---|---|---|---|")
    for name, r in records.items():
        print(f"| {name} | {r['accuracy']['all']:.1f} | {r['fp_search_mean']:.2f} | {r['seconds_per_question']:.2f} |")


if __name__ == "__main__":
    main()
