"""Training data of the tiny model: views of synthetic scenes, their prompts and replies, and the
per-patch word targets of the alignment stage.

Every prompt is built by the stock LLaVA-1.5 adapter (``focus_modules.adapters.LlavaAdapter``),
so training text matches what FOCUS asks at inference exactly. Scenes come from
``make_scene((TRAIN_SEED_TAG, seed, i))``; held-out and validation sets use other tags, so no
image they contain is ever trained on. Each scene goes through the same JPEG round trip as the
written benchmark images (``write_vstar_layout``), so training sees the pixels evaluation sees.

Patch targets (the dense alignment stage): every image is also drawn as a *class image* (R
channel = class id of the pixel: background, one of the six object colours, one of the four mark
colours), pushed through exactly the same crops, canvases and square padding as the RGB view;
the fraction of each class in each of the ``16 x 16`` patches then weighs the language model's
word embeddings (object pixel: its colour word + its shape word; mark pixel: the mark's colour
word + "mark"; background and padding: "background"). Those weights are what the projector is
trained to output for the patch (``train.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from focus_modules.adapters import LlavaAdapter
from focus_modules.adapters.base import OPTION_LETTERS, FinalView, Selection
from focus_modules.config import FocusConfig
from focus_modules.synthetic import COLORS, MARK_COLORS, PLURALS, Scene, make_scene, scene_rng
from focus_modules.synthetic.crops import context_crop_box
from focus_modules.synthetic.heldout import TRAIN_SEED_TAG
from focus_modules.synthetic.records import Box, boxes_intersect
from focus_modules.synthetic.vstar import jpeg_round_trip

BACKGROUND_WORD = "background"
MARK_WORD = "mark"
# Class ids of the class image (R channel); anything larger (padding, canvas fill) is background.
OBJECT_CLASSES = {color: 1 + i for i, color in enumerate(COLORS)}
MARK_CLASSES = {mark: 1 + len(COLORS) + i for i, mark in enumerate(MARK_COLORS)}
NUM_CLASSES = 1 + len(COLORS) + len(MARK_COLORS)
# ROI-sized crops have sides of s_min - 0.5 .. s_max + 1 map cells (the sides FOCUS's proposals
# grow between, widened either way); tight ones 1 .. s_min cells.
ROI_WIDENING = (0.5, 1.0)
TIGHT_SHARE = 0.3
EXISTENCE_PER_ROUND = 8
# Object-centred crops: crop side / object side.
OBJECT_CONTEXT = (1.3, 5.0)
TIGHT_CONTEXT = (1.2, 2.5)


@dataclass
class View:
    """An image shown to the model and its ``[grid * grid, NUM_CLASSES]`` patch class fractions."""

    image: Image.Image
    fractions: np.ndarray


@dataclass
class TrainingScene:
    """A scene with the JPEG-round-tripped pixels and its class image."""

    scene: Scene
    pixels: Image.Image
    classes: Image.Image

    @classmethod
    def make(cls, seed) -> TrainingScene:
        scene = make_scene(seed)
        return cls(scene, jpeg_round_trip(scene.image), class_image(scene))


def class_image(scene: Scene) -> Image.Image:
    """RGB image whose R channel is each pixel's class id (0 = background), G = B = 0."""
    rgb = np.asarray(scene.image).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    ids = np.zeros(codes.shape, dtype=np.uint8)
    for obj in scene.objects:
        x1, y1, x2, y2 = obj.box
        patch = codes[y1:y2, x1:x2]
        sub = ids[y1:y2, x1:x2]
        r, g, b = COLORS[obj.color]
        sub[patch == (r << 16 | g << 8 | b)] = OBJECT_CLASSES[obj.color]
        r, g, b = MARK_COLORS[obj.mark]
        sub[patch == (r << 16 | g << 8 | b)] = MARK_CLASSES[obj.mark]
    out = np.zeros((*ids.shape, 3), dtype=np.uint8)
    out[..., 0] = ids
    return Image.fromarray(out)


def patch_fractions(adapter: LlavaAdapter, class_view: Image.Image) -> np.ndarray:
    """Class fractions per patch of the view the model sees (padded square, ``adapter.grid_size``
    patches a side)."""
    square, _ = adapter.prepare_image(class_view)
    ids = np.asarray(square)[..., 0].astype(np.int64)
    ids[ids >= NUM_CLASSES] = 0
    side, grid = ids.shape[0], adapter.grid_size
    cell = np.minimum(np.arange(side) * grid // side, grid - 1)
    patch = cell[:, None] * grid + cell[None, :]
    counts = np.bincount((patch * NUM_CLASSES + ids).ravel(), minlength=grid * grid * NUM_CLASSES)
    counts = counts.reshape(grid * grid, NUM_CLASSES).astype(np.float32)
    return counts / counts.sum(1, keepdims=True)


def word_targets(tokenizer) -> list[list[int]]:
    """Per class id, the token ids whose embeddings sum to its target, before the shape words
    of a scene's objects are added (:func:`scene_class_words`)."""
    vocab = tokenizer.get_vocab()
    words = [[BACKGROUND_WORD]] + [[c] for c in COLORS] + [[m, MARK_WORD] for m in MARK_COLORS]
    return [[vocab[w] for w in group] for group in words]


def scene_class_words(scene: Scene, tokenizer) -> list[list[int]]:
    """Per class id, the token ids of its words in this scene: an object colour class also
    names the shape of the object(s) of that colour (shapes are unique per colour but for the
    counted kind and its decoys, which share one shape)."""
    vocab = tokenizer.get_vocab()
    groups = word_targets(tokenizer)
    for obj in scene.objects:
        class_id = OBJECT_CLASSES[obj.color]
        groups[class_id] = [vocab[obj.color], vocab[obj.shape]]
    return groups


def roi_box(box: Box, scene: Scene, rng: np.random.Generator, cells: tuple[float, float], grid: int) -> Box:
    """A square box of ``cells`` map cells (of the padded square's ``grid x grid`` map; a uniform
    draw) containing ``box`` at a random place, shifted inside the image."""
    width, height = scene.size
    cell = max(width, height) / grid
    side = max(box[2] - box[0], box[3] - box[1], round(rng.uniform(*cells) * cell))
    side_w, side_h = min(side, width), min(side, height)
    x1 = int(rng.integers(max(0, box[2] - side_w), min(box[0], width - side_w) + 1))
    y1 = int(rng.integers(max(0, box[3] - side_h), min(box[1], height - side_h) + 1))
    return (x1, y1, x1 + side_w, y1 + side_h)


def avoiding_roi(
    scene: Scene, avoid: list[Box], rng: np.random.Generator, cells: tuple[float, float], grid: int
) -> Box | None:
    """A box of ``cells`` map cells (of a ``grid x grid`` map) around some object or random place
    that touches no box of ``avoid``."""
    for _ in range(30):
        others = [o for o in scene.objects if o.box not in avoid]
        if others and rng.random() < 0.7:
            box = roi_box(others[rng.integers(len(others))].box, scene, rng, cells, grid)
        else:
            width, height = scene.size
            side = round(rng.uniform(*cells) * max(width, height) / grid)
            side = min(side, width, height)
            x1, y1 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            box = (x1, y1, x1 + side, y1 + side)
        if not any(boxes_intersect(box, a) for a in avoid):
            return box
    return None


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


class SampleMaker:
    """Builds ``(prompt Encoding, reply, fractions or None, class words)`` samples of a scene."""

    def __init__(self, adapter: LlavaAdapter, config: FocusConfig):
        self.adapter, self.config = adapter, config
        self.roi_cells = (max(1.0, config.s_min - ROI_WIDENING[0]), config.s_max + ROI_WIDENING[1])
        self.tight_cells = (1.0, float(config.s_min))

    def roi(self, box: Box, scene: Scene, rng: np.random.Generator) -> Box:
        """An ROI-sized (sometimes tight) square box around ``box``."""
        cells = self.tight_cells if rng.random() < TIGHT_SHARE else self.roi_cells
        return roi_box(box, scene, rng, cells, self.adapter.grid_size)

    def view(self, ts: TrainingScene, box: Box | None) -> View:
        if box is None:
            return View(ts.pixels, patch_fractions(self.adapter, ts.classes))
        return View(ts.pixels.crop(box), patch_fractions(self.adapter, ts.classes.crop(box)))

    def final_view(self, ts: TrainingScene, selection: Selection) -> tuple[FinalView, np.ndarray]:
        shown = self.adapter.final_view(ts.pixels, selection, self.config)
        classes = self.adapter.final_view(ts.classes, selection, self.config)
        return shown, patch_fractions(self.adapter, classes.images[0])

    def alignment_views(self, ts: TrainingScene, rng: np.random.Generator) -> list[View]:
        """Views for the alignment stage: object-centred crops, ROI-sized crops, a random crop,
        the whole image and three large crops (40-100 % of the short side), where objects are
        as small as in the whole-image view FOCUS's map is computed on."""
        scene = ts.scene
        views = [self.view(ts, None)]
        width, height = scene.size
        for _ in range(3):
            side = round(rng.uniform(0.4, 1.0) * min(width, height))
            x1, y1 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            views.append(self.view(ts, (x1, y1, x1 + side, y1 + side)))
        for obj in scene.objects:
            views.append(self.view(ts, context_crop_box([obj.box], scene.size, rng, OBJECT_CONTEXT, min_side=8)))
            views.append(self.view(ts, self.roi(obj.box, scene, rng)))
        views.append(self.view(ts, avoiding_roi(scene, [], rng, self.roi_cells, self.adapter.grid_size)))
        return views

    def existence(self, ts: TrainingScene, rng: np.random.Generator, positive: bool, tight: bool = False):
        """ "Is there a {colour} {shape} in the image?" on an ROI-sized crop (or, ``tight``, a crop
        around an object) with / without it. Negatives name an object of the scene (or a random
        colour + shape) the crop misses."""
        scene = ts.scene
        obj = scene.objects[rng.integers(len(scene.objects))]
        if positive:
            box = (
                context_crop_box([obj.box], scene.size, rng, TIGHT_CONTEXT, min_side=8)
                if tight
                else self.roi(obj.box, scene, rng)
            )
            target = obj.name
        else:
            if rng.random() < 0.7:
                color, shape = obj.color, obj.shape
            else:
                color = list(COLORS)[rng.integers(len(COLORS))]
                shape = scene.objects[rng.integers(len(scene.objects))].shape
            target = f"{color} {shape}"
            # No object of that colour may be in the crop: existence is decided by colour.
            avoid = [o.box for o in scene.objects if o.color == color]
            others = [o for o in scene.objects if o.color != color]
            box = None
            if tight and others:
                box = context_crop_box(
                    [others[rng.integers(len(others))].box], scene.size, rng, TIGHT_CONTEXT, min_side=8
                )
                box = None if any(boxes_intersect(box, a) for a in avoid) else box
            box = box or avoiding_roi(scene, avoid, rng, self.roi_cells, self.adapter.grid_size)
            if box is None:
                return None
        view = self.view(ts, box)
        return self.adapter.encode_existence(view.image, target), "Yes" if positive else "No", view.fractions

    def answer(self, ts: TrainingScene, question, rng: np.random.Generator, options: bool, whole: bool = False):
        """The question on the view FOCUS builds from ROI-sized boxes around its objects (or on
        the whole image), multiple choice (reply: the letter) or open-ended (reply: the text)."""
        if whole:
            view, fractions = FinalView([ts.pixels], "image", []), patch_fractions(self.adapter, ts.classes)
        else:
            boxes = [[self.roi(b, ts.scene, rng)] for b in question.boxes]
            if question.question_type == 2:
                boxes = [[b[0] for b in boxes]]
            view, fractions = self.final_view(ts, Selection(question.question_type, boxes))
        if options:
            shown, letter = shuffled_options(question.options, rng)
            return self.adapter.encode_answer(view, question.question, shown), letter, fractions
        return self.adapter.encode_answer(view, question.question, None), question.answer, fractions

    def instruction_samples(self, ts: TrainingScene, rng: np.random.Generator) -> list:
        """One scene's instruction data: step I for every question (text only, cheap; copying
        the target phrase is learned late without it); existence questions on six ROI-sized
        crops and two tight object crops, half of them "No"; every attribute question on two ROI
        views (multiple choice and open-ended) and both ways on a tight crop around its object, where
        the mark spans several patches (without these the language model answers the mark from its
        prior and never learns to read it, and the tight multiple choice teaches the colour-to-letter
        hop on a view it can read); one spatial and the counting question on their
        views; one multiple-choice question on the whole image."""
        scene = ts.scene
        samples = []
        for question in scene.questions:
            samples.append(
                (self.adapter.encode_text(self.adapter.target_prompt(question.question)), step1_reply(question), None)
            )
        for i in range(EXISTENCE_PER_ROUND):
            found = self.existence(ts, rng, positive=i % 2 == 0, tight=i >= EXISTENCE_PER_ROUND - 2)
            if found is not None:
                samples.append(found)
        for question in scene.questions_of("attribute"):
            samples.append(self.answer(ts, question, rng, options=True))
            samples.append(self.answer(ts, question, rng, options=False))
            box = context_crop_box(list(question.boxes), scene.size, rng, TIGHT_CONTEXT, min_side=8)
            view = self.view(ts, box)
            tight = FinalView([view.image], "crop", [box])
            open_ended = self.adapter.encode_answer(tight, question.question, None)
            samples.append((open_ended, question.answer, view.fractions))
            # The letter hop on a view whose mark is plain to read: the colour to its option letter.
            shown, letter = shuffled_options(question.options, rng)
            samples.append((self.adapter.encode_answer(tight, question.question, shown), letter, view.fractions))
        for question in scene.questions_of("spatial")[:1] + scene.questions_of("counting"):
            samples.append(self.answer(ts, question, rng, options=bool(rng.random() < 0.5)))
        whole = scene.questions[rng.integers(len(scene.questions))]
        samples.append(self.answer(ts, whole, rng, options=True, whole=True))
        return samples


class SampleStream(torch.utils.data.IterableDataset):
    """Samples of scenes ``(TRAIN_SEED_TAG, seed, start), (.., start + 1), ...`` as dicts with
    ``input_ids`` / ``labels`` (loss on the reply and ``</s>`` only; ``None`` in the alignment
    stage), ``pixel_values``, the patch targets' class ``fractions`` and ``class_words``, and
    the ``scene`` index (to resume)."""

    def __init__(self, adapter: LlavaAdapter, config: FocusConfig, seed: int, start: int, stage: str):
        self.maker = SampleMaker(adapter, config)
        self.adapter, self.seed, self.start, self.stage = adapter, seed, start, stage

    def __iter__(self):
        tokenizer = self.adapter.tokenizer
        eos = tokenizer.eos_token_id
        index = self.start
        while True:
            ts = TrainingScene.make((TRAIN_SEED_TAG, self.seed, index))
            rng = scene_rng((TRAIN_SEED_TAG + 1, self.seed, index))
            words = scene_class_words(ts.scene, tokenizer)
            if self.stage == "align":
                for view in self.maker.alignment_views(ts, rng):
                    yield {
                        "pixel_values": self.adapter.pixel_values([view.image]),
                        "fractions": view.fractions,
                        "class_words": words,
                        "scene": index,
                    }
            else:
                # Rendering a scene costs more than a training step; two rounds of samples per
                # scene (other crops, other questions' draws) keep the model, not the data, busy.
                samples = self.maker.instruction_samples(ts, rng) + self.maker.instruction_samples(ts, rng)
                for encoding, reply, fractions in samples:
                    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [eos]
                    ids = torch.cat([encoding.input_ids, torch.tensor(reply_ids)])
                    labels = torch.full_like(ids, -100)
                    labels[-len(reply_ids) :] = ids[-len(reply_ids) :]
                    yield {
                        "input_ids": ids,
                        "labels": labels,
                        "pixel_values": encoding.model_inputs.get("pixel_values"),
                        "fractions": fractions,
                        "class_words": words,
                        "scene": index,
                    }
            index += 1
