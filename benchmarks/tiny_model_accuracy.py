"""End-to-end accuracy of the shipped tiny model: vanilla vs FOCUS on held-out synthetic scenes.

    python benchmarks/tiny_model_accuracy.py [--attribute 150 --spatial 75 --counting 75]
        [--n-steps 1 2 4 8] [--out benchmarks/results/tiny_model_accuracy.json] [--pictures 4]

Held-out scenes use seed tag 9001 (training: 7001), so no question's image was seen in
training. Per question family it reports strict accuracy (the reply is the letter), lenient
accuracy (first standalone A-E), mean visual-search forward passes (relevance + verify),
seconds per question, and for FOCUS the top-ROI recall (a GT box is >= 50 % covered by a ROI
FOCUS selected for the final view: each target's best ROI, or for counting every ROI above
``t_type2``) and the any-ROI recall (by any proposed ROI, Sec. 4.3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from focus_modules.synthetic.heldout import heldout_items, is_correct, roi_hits
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, load_tiny_focus_llava, tiny_focus_config
from focus_modules.wrapper import FocusWrapper

FAMILIES = ("attribute", "spatial", "counting")


def mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


def evaluate(wrapper, items, method: str, batch_size: int, t_type2: float) -> tuple[dict, list]:
    start = time.perf_counter()
    results = wrapper.answer([i.image for i in items], [i.question.question for i in items],
                             options=[i.options for i in items], method=method, batch_size=batch_size)
    seconds = (time.perf_counter() - start) / len(items)
    summary = {"seconds_per_question": round(seconds, 3)}
    for family in FAMILIES + ("all",):
        picked = [(i, r) for i, r in zip(items, results) if family in ("all", i.family)]
        if not picked:
            continue
        row = {
            "n": len(picked),
            "accuracy": mean(is_correct(r.answer, i.letter) for i, r in picked),
            "accuracy_lenient": mean(is_correct(r.answer, i.letter, lenient=True) for i, r in picked),
            "fp_search_mean": mean(r.forward_passes.get("relevance", 0) + r.forward_passes.get("verify", 0)
                                   for _, r in picked),
        }
        if method == "focus":
            hits = [roi_hits(r, i.question, t_type2) for i, r in picked]
            row["top_roi_recall"] = mean(h for hit in hits for h in hit["top"])
            row["any_roi_recall"] = mean(h for hit in hits for h in hit["any"])
            row["targets_as_gt"] = mean(
                [t.lower() for t in r.targets] == [t.lower() for t in i.question.target_object] for i, r in picked)
        summary[family] = row
    return summary, results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attribute", type=int, default=150)
    parser.add_argument("--spatial", type=int, default=75)
    parser.add_argument("--counting", type=int, default=75)
    parser.add_argument("--seed", type=int, default=0, help="held-out set seed")
    parser.add_argument("--n-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny_model_accuracy.json"))
    parser.add_argument("--pictures", type=int, default=4, help="relevance-map pictures of attribute questions")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, processor = load_tiny_focus_llava(args.model)
    items = heldout_items({"attribute": args.attribute, "spatial": args.spatial, "counting": args.counting},
                          seed=args.seed)
    report = {
        "model": str(args.model.name), "heldout_seed": args.seed, "n_questions": len(items),
        "torch": torch.__version__, "machine": platform.machine(), "threads": args.threads, "runs": {},
    }
    runs = [("vanilla", 8)] + [("focus", n) for n in args.n_steps]
    best_results = None
    for method, n_steps in runs:
        config = tiny_focus_config(n_steps)
        wrapper = FocusWrapper(model, processor, config)
        name = "vanilla" if method == "vanilla" else f"focus_n{n_steps}"
        summary, results = evaluate(wrapper, items, method, args.batch_size, config.t_type2)
        summary["config"] = None if method == "vanilla" else dataclasses.asdict(config)
        report["runs"][name] = summary
        print(name, json.dumps({f: summary[f] for f in FAMILIES + ("all",) if f in summary}))
        if method == "focus" and n_steps == max(args.n_steps):
            best_results = (wrapper, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=list) + "\n")
    print(f"wrote {args.out}")

    if args.pictures and best_results is not None:
        from focus_modules.eval.viz import render_result

        wrapper, results = best_results
        shown = [(i, r) for i, r in zip(items, results) if i.family == "attribute"][: args.pictures]
        for k, (item, result) in enumerate(shown):
            picture = render_result(item.image, result, max_side=384, map_extents=result.map_extents)
            path = args.out.parent / f"tiny_model_map_{k}.png"
            # A 64-colour palette keeps the committed pictures small.
            picture.quantize(64).save(path, optimize=True)
            ok = "correct" if is_correct(result.answer, item.letter) else "wrong"
            print(f"wrote {path}: {item.question.question} -> {result.answer!r} ({ok}, answer {item.letter})")


if __name__ == "__main__":
    main()
