"""What a tiny checkpoint's vision pathway has learned, on validation scenes ``(9501, 0, i)``
(training uses tag 7001, the held-out benchmark 9001): the numbers of the model card's
"Validation probes" table.

    python benchmarks/tiny_model_probes.py [--model DIR] [--scenes 24]

- object crops (``synthetic.train.object_questions`` of 12 scenes): the open-ended colour
  answer, the shape named first by "What is in the image?", and the existence answer (Yes and
  No cases separately), all greedy;
- existence on ROI-sized crops (``synthetic.train.roi_box``) around an attribute question's
  object (Yes) and for a shape the crop does not touch (No): the Yes/No logit comparison;
- relevance maps of "Is there a {shape} in the image?" on the whole image, for every range of
  decoder layers: how often the argmax cell lies within one cell of the target, and within one
  cell of any object.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from focus_modules.adapters import LlavaAdapter
from focus_modules.adapters.base import FinalView
from focus_modules.functional import relevance_map
from focus_modules.modules.value_capture import ValueCapture
from focus_modules.synthetic import train as training
from focus_modules.synthetic.heldout import VALIDATION_SEED_TAG
from focus_modules.synthetic.records import boxes_intersect
from focus_modules.synthetic.scene import make_scene, scene_rng
from focus_modules.synthetic.shapes import SHAPES
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, load_tiny_focus_llava


def object_crop_probes(adapter, scenes: int) -> dict[str, list[bool]]:
    results: dict[str, list[bool]] = {}
    for i in range(scenes):
        scene = make_scene((VALIDATION_SEED_TAG, 0, i))
        rng = scene_rng((VALIDATION_SEED_TAG + 2, 0, i))
        for box, kind, text, reply in training.object_questions(scene, rng):
            crop = scene.crop(box)
            if kind == "existence":
                enc = adapter.encode_existence(crop, text)
            else:
                enc = adapter.encode_answer(FinalView([crop], "crop", [box]), text, None)
            answer = adapter.generate(adapter.collate([enc]), 8)[0].strip()
            if kind == "existence":
                results.setdefault(f"object_crop_existence_{reply}", []).append(answer == reply)
            elif text == training.CAPTION_QUESTION:
                first_shape = lambda caption: caption.split(", ")[0].split()[-1:]  # noqa: E731
                results.setdefault("object_crop_shape", []).append(first_shape(answer) == first_shape(reply))
            else:
                results.setdefault("object_crop_colour", []).append(answer == reply)
    return results


def scene_probes(model, adapter, scenes: int) -> dict[str, list[bool]]:
    yes, no = adapter.yes_no_ids()
    num_layers = adapter.num_layers()
    ranges = [(a, b) for a, b in itertools.combinations(range(num_layers + 1), 2)]
    results: dict[str, list[bool]] = {}
    for i in range(scenes):
        scene = make_scene((VALIDATION_SEED_TAG, 0, i))
        rng = scene_rng((VALIDATION_SEED_TAG + 1, 0, i))
        for question in scene.questions_of("attribute")[:2]:
            (shape,), (target,) = question.target_object, question.boxes
            box = training.roi_box(target, scene, rng)
            absent = [s for s in SHAPES if not any(o.shape == s and boxes_intersect(box, o.box) for o in scene.objects)]
            for phrase, reply in ((shape, "Yes"), (absent[0], "No")):
                logits = adapter.last_logits(adapter.collate([adapter.encode_existence(scene.crop(box), phrase)]))[0]
                said = "Yes" if logits[yes].max() > logits[no].max() else "No"
                results.setdefault(f"roi_crop_existence_{reply}", []).append(said == reply)
            enc = adapter.encode_existence(scene.image, shape)
            batch = adapter.collate([enc])
            with ValueCapture(model, (0, num_layers), decoder_layers=adapter.decoder_layers()) as capture:
                adapter.last_logits(batch)
                values = capture.values
            offset = batch.offsets[0]
            w, cell = enc.grid_hw[1], float(enc.geometry.cell_size[0])
            # Unclipped cell boxes (not cells_to_pixels, which clips a padding cell to a
            # zero-area box on the image edge that would "touch" objects near that edge).
            ox, oy = (float(v) for v in enc.geometry.origin)
            grown = lambda b: (b[0] - cell, b[1] - cell, b[2] + cell, b[3] + cell)  # noqa: E731
            for a, b in ranges:
                m = relevance_map(values[:, a:b], (enc.target_positions + offset)[None],
                                  (enc.visual_positions + offset)[None], torch.tensor([enc.grid_hw]),
                                  batch.inputs["attention_mask"])[0]
                row, col = divmod(int(m.flatten().argmax()), w)
                top = (ox + col * cell, oy + row * cell, ox + (col + 1) * cell, oy + (row + 1) * cell)
                results.setdefault(f"map_argmax_on_target_layers_{a}_{b}", []).append(boxes_intersect(top, grown(target)))
                results.setdefault(f"map_argmax_on_any_object_layers_{a}_{b}", []).append(
                    any(boxes_intersect(top, grown(o.box)) for o in scene.objects))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--scenes", type=int, default=24, help="validation scenes for ROI crops and maps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, processor = load_tiny_focus_llava(args.model)
    adapter = LlavaAdapter(model, processor)
    with torch.no_grad():
        results = object_crop_probes(adapter, args.scenes // 2) | scene_probes(model, adapter, args.scenes)
    print(json.dumps({k: [round(float(np.mean(v)), 3), len(v)] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
