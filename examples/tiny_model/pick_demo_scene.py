"""Which demo scene ``focus demo`` shows by default: the first of the demo scenes
``(DEMO_SEED_TAG, 0, i)`` (held out: never trained on, not in the benchmark) whose attribute
question vanilla answers wrongly and FOCUS correctly with a checkpoint, as the demo asks it, and
whose relevance map peaks within one cell of the asked object (``focus_modules.demo.map_peak_hits``,
the benchmark's map hit):

    python examples/tiny_model/pick_demo_scene.py [--model CKPT] [--scenes 40]

One scene is an illustration, not evidence: the demo prints the held-out benchmark's rates beside
it. This script also prints how often each outcome occurs over the scenes it tried.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from focus_modules.demo import demo_answers, demo_case, map_peak_hits
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, load_tiny_focus_llava, tiny_focus_config
from focus_modules.wrapper import FocusWrapper


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--n-steps", type=int, default=2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, processor = load_tiny_focus_llava(args.model)
    wrapper = FocusWrapper(model, processor, tiny_focus_config(args.n_steps, args.model))
    outcomes, first = collections.Counter(), None
    for index in range(args.scenes):
        _, image, question, options, correct = demo_case(index)
        vanilla_result, focus_result = demo_answers(wrapper, image, question, options)
        vanilla, focus = (result.answer.strip() == correct for result in (vanilla_result, focus_result))
        peak = map_peak_hits(focus_result, question.boxes)
        outcomes[(vanilla, focus, peak)] += 1
        if first is None and focus and not vanilla and peak:
            first = index
    print(f"first scene with vanilla wrong, FOCUS right and the map's peak on the asked object: {first}")
    for (vanilla, focus, peak), count in sorted(outcomes.items()):
        print(
            f"  vanilla {'right' if vanilla else 'wrong'}, FOCUS {'right' if focus else 'wrong'}, "
            f"map peak {'on' if peak else 'off'} the object: {count}"
        )


if __name__ == "__main__":
    main()
