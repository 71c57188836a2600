"""The shipped tiny model on held-out synthetic questions, through the public commands only.

    python benchmarks/tiny_model_heldout.py [--n 300] [--seed 9001] [--work runs/tiny-heldout]

runs, exactly as a user would::

    python -m focus_modules.synthetic --out WORK/data --n N --seed SEED
    focus eval --model CKPT --dataset vstar --data WORK/data --categories all --method vanilla --answer-scheme logits
    focus eval --model CKPT ... --method focus --n-steps 2 --answer-scheme logits ...

and the same two with ``--answer-scheme generate`` (the default a newcomer's ``focus eval`` uses:
the option letter is generated), then summarises the result files per category with the
harness's own scoring (``focus_modules.eval.metrics.summarize``): strict accuracy, search forward
passes, ROI recall (any proposed ROI / the ROI the answer was built from, Sec. 4.3), map hit
rate (a target's relevance-map argmax within one cell of its GT box), seconds per question. Writes
``benchmarks/results/tiny_model_heldout.json`` (every figure, the commands, the machine) and
the short summary the demo prints (``heldout_benchmark.json`` beside the checkpoint), and
prints the README's table. Seed 9001 scenes are ``(9001, family, i)``: never trained on
(training draws ``(7001, s, i)``, the probes ``(9501, 0, i)``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from focus_modules.config import ANSWER_SCHEMES
from focus_modules.demo import BENCHMARK_FILE
from focus_modules.eval.metrics import summarize
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, TINY_ANSWER_SCHEME

RESULTS = Path(__file__).resolve().parent / "results" / "tiny_model_heldout.json"
METHODS = (("vanilla", ["--method", "vanilla"]), ("FOCUS n_steps=2", ["--method", "focus", "--n-steps", "2"]))
# The tiny model's own scheme first (the one its demo and regression test use), then the default.
SCHEMES = (TINY_ANSWER_SCHEME, *(scheme for scheme in ANSWER_SCHEMES if scheme != TINY_ANSWER_SCHEME))


def run(command: list[str]) -> None:
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


def synthetic_command(data: Path, n: int, seed: int, *options: str) -> list[str]:
    """The public writer of the synthetic benchmark: ``n`` questions per family into ``data``."""
    return [
        sys.executable,
        "-m",
        "focus_modules.synthetic",
        "--out",
        str(data),
        "--n",
        str(n),
        "--seed",
        str(seed),
        *options,
    ]


def eval_command(
    model: Path, data: Path, flags: list[str], scheme: str, batch_size: int, out: Path, *options: str, categories="all"
) -> list[str]:
    """``focus eval`` of the tiny model on a written V*Bench-layout set, on the CPU, overwriting ``out``;
    ``flags`` choose the method, ``options`` are added before ``--overwrite``."""
    return [
        "focus",
        "eval",
        "--model",
        str(model),
        "--dataset",
        "vstar",
        "--data",
        str(data),
        "--categories",
        categories,
        *flags,
        "--answer-scheme",
        scheme,
        "--batch-size",
        str(batch_size),
        "--device",
        "cpu",
        *options,
        "--overwrite",
        "--out",
        str(out),
    ]


def category_table(rows: list[dict]) -> dict:
    """Per category (and all): n, accuracy, search FPs, ROI recall (any / top), s/question."""
    groups = defaultdict(list)
    for row in rows:
        groups[row["category"]].append(row)
    groups["all"] = rows
    table = {}
    for name, group in groups.items():
        s = summarize(group)
        table[name] = {
            k: s[k]
            for k in (
                "n",
                "accuracy",
                "fp_search_mean",
                "roi_recall",
                "top_roi_recall",
                "map_hit_rate",
                "seconds_mean",
                "errors",
            )
        }
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--n", type=int, default=300, help="questions per family")
    parser.add_argument("--seed", type=int, default=9001, help="held-out dataset seed")
    parser.add_argument("--work", type=Path, default=Path("runs/tiny-heldout"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--answer-schemes", nargs="+", choices=ANSWER_SCHEMES, default=list(SCHEMES), help="step VI schemes to run"
    )
    args = parser.parse_args(argv)
    data = args.work / f"data_n{args.n}_seed{args.seed}"
    commands = [synthetic_command(data, args.n, args.seed)]
    outputs = {}
    for scheme in args.answer_schemes:
        for name, flags in METHODS:
            out = args.work / f"{flags[1]}_{scheme}.jsonl"
            outputs[f"{name} ({scheme})"] = out
            commands.append(eval_command(args.model, data, flags, scheme, args.batch_size, out))
    written = sum(1 for _ in data.glob("*/*.json")) if data.is_dir() else 0
    for command in commands[1:] if written == 3 * args.n else commands:  # the set is deterministic
        run(command)
    rows = {
        name: [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        for name, out in outputs.items()
    }
    tables = {name: category_table(r) for name, r in rows.items()}
    shown = [shlex.join(["python" if c == sys.executable else c for c in command]) for command in commands]
    report = {
        "model": str(args.model),
        "questions": f"{args.n} per family, seed {args.seed}",
        "answer_schemes": args.answer_schemes,
        "commands": shown,
        "machine": f"{platform.machine()} CPU, {platform.python_version()}",
        "methods": tables,
    }
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    demo_rows = [
        {
            "method": name,
            "fp_search_mean": t["all"]["fp_search_mean"] or 0.0,
            "map_hit_rate": t["all"]["map_hit_rate"],
            "accuracy": {c: t[c]["accuracy"] for c in ("attribute", "spatial", "counting") if c in t},
        }
        for name, t in tables.items()
    ]
    demo_summary = {
        "questions": f"{3 * args.n} questions ({args.n} per family, seed {args.seed})",
        "rows": demo_rows,
        "commands": [c.replace(str(args.model), "CHECKPOINT") for c in shown],
    }
    (args.model / BENCHMARK_FILE).write_text(json.dumps(demo_summary, indent=1) + "\n")
    print("| method | category | n | accuracy | search FPs | ROI recall (any / top) | map hits | s/question |")
    print("|---|---|---|---|---|---|---|---|")
    for name, table in tables.items():
        for category, t in sorted(table.items()):
            recall = "–" if t["roi_recall"] is None else f"{t['roi_recall']:.1f} / {t['top_roi_recall']:.1f}"
            hits = "–" if t["map_hit_rate"] is None else f"{t['map_hit_rate']:.1f}"
            print(
                f"| {name} | {category} | {t['n']} | {t['accuracy']:.1f} | {t['fp_search_mean']:.2f} | {recall} | "
                f"{hits} | {t['seconds_mean']:.2f} |"
            )


if __name__ == "__main__":
    main()
