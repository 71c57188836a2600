"""Train the tiny LLaVA-1.5 on synthetic small-object VQA, from scratch and deterministically.

``python -m focus_modules.synthetic.train --out DIR --steps 2500 --first-stage-steps 900 --lr 1e-3``
(the shipped checkpoint's run)

Every prompt is built by the stock LLaVA-1.5 adapter (``focus_modules.adapters.LlavaAdapter``),
so training text matches what FOCUS asks at inference exactly. The model learns only VQA tasks,
with a next-token loss on the reply (``<reply> </s>``) and nothing else, in two stages (like
LLaVA's feature-alignment stage before instruction tuning):

1. ``--first-stage-steps`` steps of :func:`object_samples` only: questions on crops centred on
   one object ("What is in the image?" -> "red star, blue circle", its colour asked
   open-ended, and the existence question with Yes / No), where the image alone decides the
   reply. Without this stage the language model settles on text priors first and the image
   features collapse onto one direction (see the model card).
2. The full mixture, :func:`scene_samples` plus the object samples of one object per scene:

- naming the objects of a question with the adapter's step-I few-shot prompt (text only):
  "star", "star, circle", "all red stars";
- "Is there a {target} in the image? Answer Yes or No." on ROI-sized crops that do / do not
  contain a matching object;
- the multiple-choice question (options in a random order, reply = the letter) on the whole
  image and on the view FOCUS would build from ROI-sized boxes around the ground-truth objects
  (the adapter's own ``final_view``: crop, union or canvas), and the same question open-ended
  on that view (reply = the answer's text: "red", "left", "3").

No loss touches value vectors, their similarities or relevance maps: whether FOCUS's maps
find the objects is left to the method.

Determinism: scenes come from :func:`focus_modules.synthetic.make_scene` with training seeds
``(TRAIN_SEED_TAG, seed, i)`` (held-out sets use other tags), one data worker, torch seeded,
``torch.use_deterministic_algorithms(True)``; a run stopped by ``--minutes`` is not reproducible.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from focus_modules.adapters import LlavaAdapter
from focus_modules.adapters.base import FinalView, Selection
from focus_modules.config import FocusConfig

from .crops import context_crop_box
from .records import Box, boxes_intersect
from .questions import ATTRIBUTE_TEMPLATE
from .scene import Scene, make_scene, scene_rng
from .shapes import COLORS, PLURALS, SHAPES
from .tiny_llava import IMAGE_SIZE, PATCH_SIZE, build_tiny_focus_llava, make_checkpoint_portable

TRAIN_SEED_TAG = 7001
GRID = IMAGE_SIZE // PATCH_SIZE
# ROI sides in map cells (RoiProposer grows s_min=3 .. s_max=5), widened a little either way;
# half the crops are tighter (objects larger), which gets the vision tower learning sooner.
ROI_CELLS = (2.5, 6.0)
TIGHT_CELLS = (0.8, 2.5)
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Object-centred crops of the first stage: crop side / object side.
OBJECT_CONTEXT = (1.3, 6.0)
CAPTION_QUESTION = "What is in the image?"


def roi_box(box: Box, scene: Scene, rng: np.random.Generator) -> Box:
    """A square box of ``ROI_CELLS`` map cells (of the padded square) that contains ``box`` at a
    random place, shifted inside the image."""
    width, height = scene.size
    cell = max(width, height) / GRID
    cells = TIGHT_CELLS if rng.random() < 0.5 else ROI_CELLS
    side = max(box[2] - box[0], box[3] - box[1], round(rng.uniform(*cells) * cell))
    side_w, side_h = min(side, width), min(side, height)
    x1 = int(rng.integers(max(0, box[2] - side_w), min(box[0], width - side_w) + 1))
    y1 = int(rng.integers(max(0, box[3] - side_h), min(box[1], height - side_h) + 1))
    return (x1, y1, x1 + side_w, y1 + side_h)


def shuffled_options(options, rng: np.random.Generator) -> tuple[list[str], str]:
    """The options in a random order and the letter of the correct one (``options[0]``)."""
    order = rng.permutation(len(options))
    shown = [options[i] for i in order]
    return shown, OPTION_LETTERS[int(np.flatnonzero(order == 0)[0])]


def step1_reply(question) -> str:
    """What the model should answer to the step-I prompt (the few-shot examples' format)."""
    if question.question_type == 2:
        color, shape = question.target_object[0].split()
        return f"all {color} {PLURALS[shape]}"
    return ", ".join(question.target_object)


def existence_sample(scene: Scene, rng: np.random.Generator, positive: bool) -> tuple[Box, str, str] | None:
    """An ROI-sized crop and a target phrase: an object of the phrase is inside (Yes) or no pixel
    of one is (No). Phrases: shape, colour + shape, or colour + plural (type-2 targets)."""
    kind = rng.choice(3, p=[0.5, 0.35, 0.15])
    if positive:
        obj = scene.objects[rng.integers(len(scene.objects))]
        box = roi_box(obj.box, scene, rng)
        matching = [obj]
        color, shape = obj.color, obj.shape
    else:
        shape = SHAPES[rng.integers(len(SHAPES))]
        color = list(COLORS)[rng.integers(len(COLORS))]
        anchor = scene.objects[rng.integers(len(scene.objects))]
        box = roi_box(anchor.box, scene, rng)
        matching = [o for o in scene.objects if o.shape == shape and (kind == 0 or o.color == color)]
        if any(boxes_intersect(box, o.box) for o in matching):
            return None
    target = shape if kind == 0 else f"{color} {shape}" if kind == 1 else f"{color} {PLURALS[shape]}"
    return box, target, "Yes" if positive else "No"


def scene_samples(scene: Scene, adapter: LlavaAdapter, config: FocusConfig, rng: np.random.Generator):
    """``(Encoding, reply)`` training pairs from one scene: step-I naming, existence on crops,
    answers on FOCUS-style views and on the whole image."""
    samples = []
    for i in rng.permutation(len(scene.questions))[:1]:
        question = scene.questions[i]
        samples.append((adapter.encode_text(adapter.target_prompt(question.question)), step1_reply(question)))
    for i in range(4):
        found = existence_sample(scene, rng, positive=i % 2 == 0)
        if found is not None:
            box, target, reply = found
            samples.append((adapter.encode_existence(scene.crop(box), target), reply))
    attribute = scene.questions_of("attribute")
    spatial = scene.questions_of("spatial")[:1]
    counting = scene.questions_of("counting")
    for question in attribute + spatial + counting:
        boxes = [[roi_box(b, scene, rng)] for b in question.boxes]
        if question.question_type == 2:
            boxes = [[b[0] for b in boxes]]
        view = adapter.final_view(scene.image, Selection(question.question_type, boxes), config)
        shown, letter = shuffled_options(question.options, rng)
        samples.append((adapter.encode_answer(view, question.question, shown), letter))
        # The same question open-ended (the adapter sends it without options): reply = the
        # option text, a one-hop signal from pixels to words.
        samples.append((adapter.encode_answer(view, question.question, None), question.answer))
    whole = scene.questions[rng.integers(len(scene.questions))]
    shown, letter = shuffled_options(whole.options, rng)
    samples.append((adapter.encode_answer(FinalView([scene.image], "image", []), whole.question, shown), letter))
    return samples


def object_questions(scene: Scene, rng: np.random.Generator, objects=None) -> list[tuple[Box, str, str, str]]:
    """Questions on crops centred on one object (the object fills 1/6 to 3/4 of the crop's
    side), the first stage's data, as ``(crop_box, kind, text, reply)`` with ``kind`` "answer"
    (``text`` is the question) or "existence" (``text`` is the target phrase). Per object: what
    is in the crop ("red star, blue circle": every object it touches, left to right), the
    object's colour asked open-ended (unless the crop touches the same shape in another colour),
    and "Is there a {target} in the image?" for the object (Yes) and for a shape the crop does
    not touch (No). ``objects`` limits them to some of the scene's objects."""
    questions = []
    for obj in scene.objects if objects is None else objects:
        box = context_crop_box([obj.box], scene.size, rng, context=OBJECT_CONTEXT, min_side=8)
        touching = sorted((o for o in scene.objects if boxes_intersect(box, o.box)), key=lambda o: o.box[0])
        questions.append((box, "answer", CAPTION_QUESTION, ", ".join(f"{o.color} {o.shape}" for o in touching)))
        if all(o.color == obj.color for o in touching if o.shape == obj.shape):
            questions.append((box, "answer", ATTRIBUTE_TEMPLATE.format(shape=obj.shape), obj.color))
        target = obj.shape if rng.random() < 0.6 else f"{obj.color} {obj.shape}"
        questions.append((box, "existence", target, "Yes"))
        absent = [shape for shape in SHAPES if all(o.shape != shape for o in touching)]
        if absent:
            questions.append((box, "existence", absent[rng.integers(len(absent))], "No"))
    return questions


def object_samples(scene: Scene, adapter: LlavaAdapter, rng: np.random.Generator, objects=None) -> list:
    """:func:`object_questions` as ``(Encoding, reply)`` pairs. These are easy views where the
    image alone decides the reply, so that the vision tower and projector learn colours and
    shapes before the language model settles on text priors."""
    samples = []
    for box, kind, text, reply in object_questions(scene, rng, objects):
        crop = scene.crop(box)
        if kind == "existence":
            samples.append((adapter.encode_existence(crop, text), reply))
        else:
            samples.append((adapter.encode_answer(FinalView([crop], "crop", [box]), text, None), reply))
    return samples


class SampleStream(torch.utils.data.IterableDataset):
    """Training pairs of scenes ``(TRAIN_SEED_TAG, seed, 0), (.., 1), ...``, tokenised as
    ``input_ids`` / ``labels`` (loss on the reply and ``</s>`` only) plus ``pixel_values``.

    The first ``first_stage_samples`` pairs are :func:`object_samples` of every object (all with
    an image, so they fill exactly ``first_stage_samples / batch_size`` batches); after them each
    scene gives :func:`scene_samples` plus the object samples of one random object."""

    def __init__(self, adapter: LlavaAdapter, config: FocusConfig, seed: int, first_stage_samples: int = 0):
        self.adapter, self.config, self.seed = adapter, config, seed
        self.first_stage_samples = first_stage_samples

    def __iter__(self):
        tokenizer = self.adapter.tokenizer
        eos = tokenizer.eos_token_id
        index, made = 0, 0
        while True:
            scene = make_scene((TRAIN_SEED_TAG, self.seed, index))
            rng = scene_rng((TRAIN_SEED_TAG + 1, self.seed, index))
            if made < self.first_stage_samples:
                pairs = object_samples(scene, self.adapter, rng)[: self.first_stage_samples - made]
            else:
                some = [scene.objects[rng.integers(len(scene.objects))]]
                pairs = scene_samples(scene, self.adapter, self.config, rng) + object_samples(
                    scene, self.adapter, rng, some)
            for encoding, reply in pairs:
                reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [eos]
                ids = torch.cat([encoding.input_ids, torch.tensor(reply_ids)])
                labels = torch.full_like(ids, -100)
                labels[-len(reply_ids):] = ids[-len(reply_ids):]
                made += 1
                yield ids, labels, encoding.model_inputs.get("pixel_values")
            index += 1


def batches(stream, batch_size: int, pad_id: int):
    """Right-padded batches (padding after the reply changes nothing for the real tokens under
    a causal mask); text-only and image prompts go in separate batches."""
    pending = {True: [], False: []}
    for ids, labels, pixels in stream:
        group = pending[pixels is not None]
        group.append((ids, labels, pixels))
        if len(group) < batch_size:
            continue
        length = max(ids.numel() for ids, _, _ in group)
        input_ids = torch.full((len(group), length), pad_id, dtype=torch.long)
        target = torch.full((len(group), length), -100, dtype=torch.long)
        mask = torch.zeros((len(group), length), dtype=torch.long)
        for row, (ids, lab, _) in enumerate(group):
            input_ids[row, : ids.numel()] = ids
            target[row, : ids.numel()] = lab
            mask[row, : ids.numel()] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": target}
        if pixels is not None:
            batch["pixel_values"] = torch.cat([p for _, _, p in group])
        group.clear()
        yield batch


def train(out: Path, steps: int, minutes: float | None, batch_size: int, lr: float, seed: int,
          threads: int, save_every: int | None = None, first_stage_steps: int = 0) -> dict:
    from tqdm import tqdm

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    model, processor = build_tiny_focus_llava(seed=seed)
    model.train()
    adapter = LlavaAdapter(model, processor)
    config = FocusConfig.preset("llava-1.5", layers=(0, model.config.text_config.num_hidden_layers))
    loader = torch.utils.data.DataLoader(
        SampleStream(adapter, config, seed, first_stage_steps * batch_size), batch_size=None, num_workers=1,
        prefetch_factor=64, persistent_workers=False,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    start = time.time()
    losses, step = [], 0
    bar = tqdm(total=steps, desc="train", unit="step")
    for batch in batches(iter(loader), batch_size, adapter.pad_token_id):
        loss = model(**batch, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if save_every and step % save_every == 0 and step < steps:
            save(model, processor, out / f"step_{step}")
        if step >= steps or (minutes is not None and time.time() - start > minutes * 60):
            break
    bar.close()
    save(model, processor, out)
    log = {
        "steps": step, "planned_steps": steps, "first_stage_steps": first_stage_steps, "batch_size": batch_size,
        "lr": lr, "seed": seed, "threads": threads, "minutes": round((time.time() - start) / 60, 2),
        "loss_first_50": float(np.mean(losses[:50])), "loss_last_50": float(np.mean(losses[-50:])),
        "torch": torch.__version__,
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return log


def save(model, processor, folder: Path) -> None:
    """Write the model (safetensors) and processor for ``from_pretrained`` (transformers 4.46+)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    make_checkpoint_portable(folder)
    model.train()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m focus_modules.synthetic.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps (sets the LR schedule)")
    parser.add_argument("--minutes", type=float, default=None, help="stop early after this wall time")
    parser.add_argument("--first-stage-steps", type=int, default=0,
                        help="steps on object-centred crops only, before the full mixture")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--save-every", type=int, default=None, help="also save step_N/ checkpoints")
    args = parser.parse_args(argv)
    log = train(args.out, args.steps, args.minutes, args.batch_size, args.lr, args.seed, args.threads,
                args.save_every, args.first_stage_steps)
    print(json.dumps(log))


if __name__ == "__main__":
    main()
