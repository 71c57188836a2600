"""``focus demo``: vanilla vs FOCUS with the shipped tiny model on a synthetic image, offline.

The image is a held-out synthetic scene drawn from a fixed seed (the generator is deterministic,
so every install draws the same pixels; no image file is needed), stored and decoded as JPEG as
the benchmark's images are. The model is the tiny LLaVA-1.5 trained on synthetic small-object
VQA that ships inside the package (``focus_modules/assets/tiny-focus-llava``, see its model
card). One scene proves nothing either way: the held-out benchmark's measured rates, printed
beside it, are the evidence, and the command that reproduces them is printed too. The picture
``focus_demo.png`` shows the image with the chosen ROIs and each target's relevance map as a
heat map.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

# The default scene: the first demo scene where, with the shipped checkpoint, vanilla is wrong, FOCUS
# right and the relevance map peaks within one cell of the asked object
# (examples/tiny_model/pick_demo_scene.py; over demo scenes 0-29 vanilla is wrong and FOCUS right
# in 14 of 30, with the map's peak on the object in 6 of those; the reverse outcome in 1). Picked
# to show the method at work: the rates printed beside it are the evidence.
DEMO_SCENE = 0
# The held-out benchmark's summary, written beside the checkpoint by the benchmark script.
BENCHMARK_FILE = "heldout_benchmark.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focus demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("focus_demo.png"), help="picture to write")
    parser.add_argument("--scene", type=int, default=DEMO_SCENE, help=f"another demo scene (default {DEMO_SCENE})")
    parser.add_argument(
        "--family",
        choices=("attribute", "spatial", "counting"),
        default="attribute",
        help="question family (default attribute)",
    )
    parser.add_argument("--n-steps", type=int, default=2, help="ROIs verified per target (default 2)")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the shipped one)")


def run(args: argparse.Namespace) -> int:
    import torch

    from focus_modules.adapters.base import OPTION_LETTERS
    from focus_modules.eval.viz import render_result
    from focus_modules.results import search_forward_passes
    from focus_modules.synthetic.tiny_llava import (
        SHIPPED_CHECKPOINT,
        TINY_ANSWER_SCHEME,
        load_tiny_focus_llava,
        tiny_focus_config,
    )
    from focus_modules.wrapper import FocusWrapper

    if args.n_steps < 1 or args.scene < 0:
        raise ValueError(f"--n-steps must be >= 1 and --scene >= 0, got {args.n_steps} and {args.scene}")
    torch.manual_seed(0)
    checkpoint = args.model or SHIPPED_CHECKPOINT
    model, processor = load_tiny_focus_llava(checkpoint)
    scene, image, question, options, correct = demo_case(args.scene, args.family)

    config = tiny_focus_config(args.n_steps, checkpoint)
    wrapper = FocusWrapper(model, processor, config)
    width, height = scene.size
    print(
        f"Image: synthetic scene {args.scene}, {width}x{height} px (objects of 28-52 px, each with a small "
        "centred mark of one to two model pixels in the whole-image view)"
    )
    print(f"Question: {question.question}")
    for letter, option in zip(OPTION_LETTERS, options):
        print(f"  ({letter}) {option}" + ("   <- correct" if letter == correct else ""))
    print(f"Answer scheme: {TINY_ANSWER_SCHEME} (each option's text scored as the reply), for both methods")
    vanilla, focus = demo_answers(wrapper, image, question, options)
    answers = []
    for name, result in (("vanilla", vanilla), (f"FOCUS (n_steps={args.n_steps})", focus)):
        verdict = "correct" if result.answer.strip() == correct else "wrong"
        fps = ", ".join(f"{phase} {count}" for phase, count in result.forward_passes.items())
        search = search_forward_passes(result.forward_passes)
        print(f"{name:>22}: {result.answer!r} ({verdict}); forward passes: {fps} (visual search {search})")
        answers.append(f"{name}: {result.answer} ({verdict}), visual-search passes {search}")
    print(f"FOCUS targets: {focus.targets} (type {focus.question_type}, {focus.final_view} view)")
    for target, rois in zip(focus.targets, focus.rois):
        if rois:
            best = rois[0]
            box = ", ".join(f"{v:.0f}" for v in best.box)
            print(f"  best ROI for {target!r}: ({box}) relevance {best.relevance:.3f} confidence {best.confidence}")
    peak = "within one cell of" if map_peak_hits(focus, question.boxes) else "NOT within one cell of"
    print(f"The relevance map's peak lies {peak} the asked object.")
    rates = benchmark_lines(Path(checkpoint) / BENCHMARK_FILE)
    caption = [
        f"{question.question}  (correct: {correct}; white box: the asked object; thick box: the ROI "
        "FOCUS answered from)",
        *answers,
        f"relevance-map peak {peak} the asked object",
        *rates[:-1],
    ]
    picture = render_result(image, focus, map_extents=focus.map_extents, truth_boxes=question.boxes, caption=caption)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out)
    print(f"wrote {args.out} (image with ROIs, relevance heat map per target, answers and measured rates)")
    print("\n" + "\n".join(rates))
    return 0


def demo_case(index: int, family: str = "attribute"):
    """Demo scene ``index``: ``(scene, image as decoded from its JPEG, question, options in the
    order shown, letter of the correct one)``; the first question of ``family`` is asked.

    Raises:
        ValueError: the scene has no question of ``family``.
    """
    from focus_modules.adapters.base import OPTION_LETTERS
    from focus_modules.synthetic import make_scene, scene_rng
    from focus_modules.synthetic.heldout import DEMO_SEED_TAG
    from focus_modules.synthetic.vstar import jpeg_round_trip

    scene = make_scene((DEMO_SEED_TAG, 0, index))
    questions = scene.questions_of(family)
    if not questions:
        raise ValueError(f"demo scene {index} has no {family} question; try another --scene")
    question = questions[0]
    order = scene_rng((DEMO_SEED_TAG, 1, index)).permutation(len(question.options))
    options = [question.options[i] for i in order]
    return scene, jpeg_round_trip(scene.image), question, options, OPTION_LETTERS[list(order).index(0)]


def demo_answers(wrapper, image, question, options):
    """``(vanilla result, FOCUS result)`` for a demo case, answered as the tiny model's benchmark
    answers (``TINY_ANSWER_SCHEME``)."""
    from focus_modules.synthetic.tiny_llava import TINY_ANSWER_SCHEME

    return tuple(
        wrapper.answer(
            [image], [question.question], options=[options], method=method, answer_scheme=TINY_ANSWER_SCHEME
        )[0]
        for method in ("vanilla", "focus")
    )


def map_peak_hits(result, boxes) -> bool:
    """Whether a relevance map of ``result`` peaks within one cell of one of ``boxes`` (the
    asked objects' pixel boxes), as the held-out benchmark's map hit rate counts it."""
    from focus_modules.eval.metrics import map_hits, map_peak_cell

    peaks = [map_peak_cell(heat, extent) for heat, extent in zip(result.relevance_maps, result.map_extents)]
    return any(map_hits(peaks, boxes))


def benchmark_lines(path: Path) -> list[str]:
    """The held-out benchmark's measured rates for this checkpoint, and (last line) how to
    reproduce them: one example proves nothing, these numbers are the evidence."""
    if not path.is_file():
        return [f"(no {BENCHMARK_FILE} beside this checkpoint: its held-out rates were not measured)", ""]
    bench = json.loads(path.read_text())
    lines = [f"Measured on {bench['questions']} (held-out scenes, never trained on):"]
    for row in bench["rows"]:
        cells = ", ".join(f"{family} {acc:.1f} %" for family, acc in row["accuracy"].items())
        hits = "" if row.get("map_hit_rate") is None else f"; map peak on the target {row['map_hit_rate']:.1f} %"
        lines.append(f"  {row['method']:>29}: {cells}; search forward passes {row['fp_search_mean']:.2f}{hits}")
    commands = "\n".join(f"  {command}" for command in bench["commands"])
    where = f"CHECKPOINT={path.parent}; or python benchmarks/tiny_model_heldout.py in the repository"
    lines.append(f"Reproduce ({where}):\n{commands}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
