"""Each link of FOCUS's chain on a tiny checkpoint, measured on validation scenes
``(VALIDATION_SEED_TAG, 0, i)`` (neither trained on nor benchmarked):

    python examples/tiny_model/probes.py --model runs/tiny/step_1000 [--scenes 24]

- ``step1_exact``: step I (the adapter's few-shot prompt, greedy, parsed as the wrapper parses
  it) names exactly the question's target objects;
- ``existence_roi_Yes`` / ``_No``: "Is there a {colour} {shape}?" on ROI-sized crops with / without
  the object, by the Yes/No logits (what FOCUS's step V reads);
- ``mark_ideal_crop``: the multiple-choice mark question on an ROI-sized crop around the object
  (``s_min`` to ``s_max`` map cells of the checkpoint's FOCUS settings: the view FOCUS answers
  from when it finds the object), strict letter match; ``_open``: the same crop, open-ended, the
  reply equal to the answer; ``mark_tight_crop_open``: open-ended on a crop 1.2-2.5 x the object;
- ``map_hit_layers_a_b``: the argmax cell of the relevance map of "Is there a {target}?" on the
  whole image lies within one cell of the target, per range of decoder layers;
  ``map_top10pct_layers_a_b``: a cell within one cell of the target is among the map's top
  tenth; ``_tokenI``: the map of target token I alone (0: the colour word, 1: the shape word);
  ``map_hit_layers_a_b_canvas_small`` / ``_large``: the hit rate on scenes whose long side is at
  most / above ``SMALL_CANVAS`` px (a 28 px object is 1.5 / 1.3 model pixels at 96 px there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import TIGHT_CONTEXT, SampleMaker, TrainingScene, roi_box, shuffled_options  # noqa: E402

from focus_modules import targets as target_text  # noqa: E402
from focus_modules.adapters import LlavaAdapter  # noqa: E402
from focus_modules.adapters.base import FinalView  # noqa: E402
from focus_modules.functional import relevance_map  # noqa: E402
from focus_modules.modules.value_capture import ValueCapture  # noqa: E402
from focus_modules.synthetic.crops import context_crop_box  # noqa: E402
from focus_modules.synthetic.heldout import VALIDATION_SEED_TAG  # noqa: E402
from focus_modules.synthetic.records import boxes_intersect  # noqa: E402
from focus_modules.synthetic.scene import scene_rng  # noqa: E402
from focus_modules.synthetic.tiny_llava import load_tiny_focus_llava, tiny_focus_config  # noqa: E402

# Scenes whose long side is at most this many pixels count as small canvases in the map probes.
SMALL_CANVAS = 1800


def probe(model, adapter, config, scenes: int, layer_ranges) -> dict[str, list[bool]]:
    maker = SampleMaker(adapter, config)
    yes, no = adapter.yes_no_ids()
    results: dict[str, list[bool]] = {}
    add = lambda key, ok: results.setdefault(key, []).append(bool(ok))  # noqa: E731
    for i in range(scenes):
        ts = TrainingScene.make((VALIDATION_SEED_TAG, 0, i))
        scene = ts.scene
        rng = scene_rng((VALIDATION_SEED_TAG + 3, 0, i))
        for question in scene.questions_of("attribute")[:2] + scene.questions_of("spatial")[:1]:
            reply = adapter.generate(
                adapter.collate([adapter.encode_text(adapter.target_prompt(question.question))]), 16
            )[0]
            named, _ = target_text.normalize_targets(target_text.parse_targets(reply, question.question))
            add("step1_exact", named == list(question.target_object))
        for positive in (True, False):
            found = maker.existence(ts, rng, positive)
            if found is not None:
                logits = adapter.last_logits(adapter.collate([found[0]]))[0]
                said = "Yes" if logits[yes].max() > logits[no].max() else "No"
                add(f"existence_roi_{found[1]}", said == found[1])
        for question in scene.questions_of("attribute")[:2]:
            box = roi_box(question.boxes[0], scene, rng, (config.s_min, config.s_max), adapter.grid_size)
            shown, letter = shuffled_options(question.options, rng)
            enc = adapter.encode_answer(FinalView([ts.pixels.crop(box)], "crop", [box]), question.question, shown)
            add("mark_ideal_crop", adapter.generate(adapter.collate([enc]), 4)[0].strip() == letter)
            view = FinalView([ts.pixels.crop(box)], "crop", [box])
            enc = adapter.encode_answer(view, question.question, None)
            add("mark_ideal_crop_open", adapter.generate(adapter.collate([enc]), 4)[0].strip() == question.answer)
            tight = context_crop_box(list(question.boxes), scene.size, rng, TIGHT_CONTEXT, min_side=8)
            enc = adapter.encode_answer(FinalView([ts.pixels.crop(tight)], "crop", [tight]), question.question, None)
            add("mark_tight_crop_open", adapter.generate(adapter.collate([enc]), 4)[0].strip() == question.answer)
            enc = adapter.encode_existence(ts.pixels, question.target_object[0])
            batch = adapter.collate([enc])
            with ValueCapture(model, (0, adapter.num_layers()), decoder_layers=adapter.decoder_layers()) as capture:
                adapter.last_logits(batch)
                values = capture.values
            offset, w = batch.offsets[0], enc.grid_hw[1]
            cell = float(enc.geometry.cell_size[0])
            ox, oy = (float(v) for v in enc.geometry.origin)
            target = question.boxes[0]
            canvas = "small" if max(scene.size) <= SMALL_CANVAS else "large"
            grown = (target[0] - cell, target[1] - cell, target[2] + cell, target[3] + cell)
            cells = [
                (ox + c * cell, oy + r * cell, ox + (c + 1) * cell, oy + (r + 1) * cell)
                for r in range(enc.grid_hw[0])
                for c in range(w)
            ]
            near = torch.tensor([boxes_intersect(box, grown) for box in cells])
            tokens = {
                "": enc.target_positions,
                **{f"_token{i}": enc.target_positions[i : i + 1] for i in range(len(enc.target_positions))},
            }
            for a, b in layer_ranges:
                for suffix, positions in tokens.items():
                    m = relevance_map(
                        values[:, a:b],
                        (positions + offset)[None],
                        (enc.visual_positions + offset)[None],
                        torch.tensor([enc.grid_hw]),
                        batch.inputs["attention_mask"],
                    )[0].flatten()
                    add(f"map_hit_layers_{a}_{b}{suffix}", bool(near[int(m.argmax())]))
                    if not suffix:
                        add(f"map_hit_layers_{a}_{b}_canvas_{canvas}", bool(near[int(m.argmax())]))
                    # The target's best cell among the map's top tenth of cells.
                    add(f"map_top10pct_layers_{a}_{b}{suffix}", bool((m > m[near].max()).float().mean() < 0.1))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--all-layer-ranges", action="store_true", help="every (a, b) range, not a few")
    parser.add_argument("--out", type=Path, default=None, help="also write the rates as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, processor = load_tiny_focus_llava(args.model)
    adapter = LlavaAdapter(model, processor)
    n = adapter.num_layers()
    ranges = (
        list(itertools.combinations(range(n + 1), 2))
        if args.all_layer_ranges
        else [(0, 1), (0, 2), (1, 4), (3, n), (0, n)]
    )
    with torch.no_grad():
        results = probe(model, adapter, tiny_focus_config(path=args.model), args.scenes, ranges)
    rates = {k: {"rate": round(float(np.mean(v)), 3), "n": len(v)} for k, v in results.items()}
    print(json.dumps(rates, indent=1))
    if args.out is not None:
        report = {
            "checkpoint": str(args.model),
            "scenes": f"{args.scenes} validation scenes ({VALIDATION_SEED_TAG}, 0, i)",
            "command": shlex.join(["python", "examples/tiny_model/probes.py", *(argv or sys.argv[1:])]),
            "results": rates,
        }
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
