"""``focus demo``: vanilla vs FOCUS with the shipped tiny model on a synthetic image, offline.

The image is a held-out synthetic scene drawn from a fixed seed (the generator is deterministic,
so every install draws the same pixels; no image file is needed). The model is the tiny
LLaVA-1.5 trained on synthetic small-object VQA that ships inside the package
(``focus_modules/assets/tiny-focus-llava``, see its model card). The picture
``focus_demo.png`` shows the image with the chosen ROIs, each target's relevance map and the
view FOCUS answered from.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

# The demo scene: held-out tag, not a training seed (training draws (7001, seed, i)).
DEMO_SEED = (9101, 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focus demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("focus_demo.png"), help="picture to write")
    parser.add_argument("--scene", type=int, default=0, help="another demo scene (default 0)")
    parser.add_argument("--family", choices=("attribute", "spatial", "counting"), default="attribute",
                        help="question family (default attribute)")
    parser.add_argument("--n-steps", type=int, default=8, help="ROIs verified per target (default 8)")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the shipped one)")


def run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from focus_modules.eval.viz import render_result
    from focus_modules.synthetic import make_scene, scene_rng
    from focus_modules.synthetic.heldout import OPTION_LETTERS
    from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, load_tiny_focus_llava, tiny_focus_config
    from focus_modules.wrapper import FocusWrapper

    torch.manual_seed(0)
    model, processor = load_tiny_focus_llava(args.model or SHIPPED_CHECKPOINT)
    scene = make_scene((*DEMO_SEED, args.scene))
    questions = scene.questions_of(args.family)
    if not questions:
        raise ValueError(f"demo scene {args.scene} has no {args.family} question; try another --scene")
    question = questions[0]
    order = scene_rng((*DEMO_SEED, args.scene, 1)).permutation(len(question.options))
    options = [question.options[i] for i in order]
    correct = OPTION_LETTERS[list(order).index(0)]

    config = tiny_focus_config(args.n_steps)
    wrapper = FocusWrapper(model, processor, config)
    width, height = scene.size
    print(f"Image: synthetic scene {args.scene}, {width}x{height} px (objects of 16-48 px)")
    print(f"Question: {question.question}")
    for letter, option in zip(OPTION_LETTERS, options):
        print(f"  ({letter}) {option}" + ("   <- correct" if letter == correct else ""))
    vanilla = wrapper.answer([scene.image], [question.question], options=[options], method="vanilla")[0]
    focus = wrapper.answer([scene.image], [question.question], options=[options], method="focus")[0]
    for name, result in (("vanilla", vanilla), (f"FOCUS (n_steps={args.n_steps})", focus)):
        verdict = "correct" if result.answer.strip() == correct else "wrong"
        fps = ", ".join(f"{phase} {count}" for phase, count in result.forward_passes.items())
        search = result.forward_passes.get("relevance", 0) + result.forward_passes.get("verify", 0)
        print(f"{name:>22}: {result.answer!r} ({verdict}); forward passes: {fps} (visual search {search})")
    print(f"FOCUS targets: {focus.targets} (type {focus.question_type}, {focus.final_view} view)")
    for target, rois in zip(focus.targets, focus.rois):
        if rois:
            best = rois[0]
            box = ", ".join(f"{v:.0f}" for v in best.box)
            print(f"  best ROI for {target!r}: ({box}) relevance {best.relevance:.3f} confidence {best.confidence}")
    picture = render_result(scene.image, focus, map_extents=focus.map_extents)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out)
    print(f"wrote {args.out} (image with ROIs, relevance map per target)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
