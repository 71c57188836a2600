"""The tiny model's training data and run (focus_modules.synthetic.train): replies that match the
drawn pixels, the two-stage stream, and a byte-identical checkpoint from two short runs."""

import itertools

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from focus_modules.synthetic import COLORS, SHAPES, SceneConfig, make_scene
from focus_modules.synthetic import train as training
from focus_modules.synthetic.records import boxes_intersect
from focus_modules.synthetic.tiny_llava import load_tiny_focus_llava

SMALL = SceneConfig(canvas_side=(256, 512))


def _colours_in(scene, box):
    """Target colours whose exact RGB value occurs in the crop's pixels."""
    x1, y1, x2, y2 = box
    pixels = np.asarray(scene.image)[y1:y2, x1:x2].reshape(-1, 3)
    return {name for name, rgb in COLORS.items() if (pixels == rgb).all(-1).any()}


def test_object_questions_replies_match_the_scene():
    kinds = set()
    for seed in range(8):
        scene = make_scene(seed, SMALL)
        questions = training.object_questions(scene, np.random.default_rng(seed))
        assert questions == training.object_questions(scene, np.random.default_rng(seed))
        for box, kind, text, reply in questions:
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= scene.size[0] and 0 <= y1 < y2 <= scene.size[1]
            touching = [o for o in scene.objects if boxes_intersect(box, o.box)]
            if kind == "existence":
                color, shape = text.split() if " " in text else (None, text)
                matches = [o for o in scene.objects if o.shape == shape and color in (None, o.color)]
                if reply == "Yes":
                    assert any(x1 <= m.box[0] and y1 <= m.box[1] and m.box[2] <= x2 and m.box[3] <= y2 for m in matches)
                else:
                    assert reply == "No" and color is None and not any(m in touching for m in matches)
            elif text == training.CAPTION_QUESTION:
                named = [tuple(part.split()) for part in reply.split(", ")]
                assert named == [(o.color, o.shape) for o in sorted(touching, key=lambda o: o.box[0])]
                assert _colours_in(scene, box) <= {c for c, _ in named}  # a touching box may show no pixel
            else:
                shape = text.removeprefix("What is the color of the ").removesuffix("?")
                assert shape in SHAPES and reply in COLORS
                assert {o.color for o in touching if o.shape == shape} == {reply}
            kinds.add((kind, reply if kind == "existence" else text == training.CAPTION_QUESTION))
    assert kinds == {("existence", "Yes"), ("existence", "No"), ("answer", True), ("answer", False)}


def test_object_crops_keep_the_object_large():
    for seed in range(6):
        scene = make_scene(seed, SMALL)
        for obj in scene.objects:
            (box, *_), *_ = training.object_questions(scene, np.random.default_rng(seed), [obj])
            side = max(obj.box[2] - obj.box[0], obj.box[3] - obj.box[1])
            crop_side = max(box[2] - box[0], box[3] - box[1])
            assert side <= crop_side <= max(8, round(side * training.OBJECT_CONTEXT[1]))


@pytest.fixture(scope="module")
def tiny():
    from focus_modules.adapters import LlavaAdapter
    from focus_modules.config import FocusConfig
    from focus_modules.synthetic.tiny_llava import build_tiny_focus_llava

    model, processor = build_tiny_focus_llava(seed=0)
    return LlavaAdapter(model, processor), FocusConfig.preset("llava-1.5", layers=(0, 6))


def test_stream_first_stage_then_mixture_deterministic(tiny):
    adapter, config = tiny
    first = 12
    samples, again = (list(itertools.islice(training.SampleStream(adapter, config, seed=3, first_stage_samples=first), 60))
                      for _ in range(2))
    for (ids, labels, pixels), (ids2, labels2, pixels2) in zip(samples, again):
        assert torch.equal(ids, ids2) and torch.equal(labels, labels2)
        assert (pixels is None and pixels2 is None) or torch.equal(pixels, pixels2)
    tokenizer = adapter.tokenizer
    prompts = [tokenizer.decode(ids[labels == -100]) for ids, labels, _ in samples]
    object_prompt = lambda p: "What is in the image" in p or "Is there a" in p or "color of the" in p  # noqa: E731
    assert all(pixels is not None and object_prompt(p) for (_, _, pixels), p in zip(samples[:first], prompts))
    # The mixture follows: the step-I naming prompt (text only) and multiple-choice questions.
    assert any(pixels is None for _, _, pixels in samples[first:])
    assert any("letter from the given choices" in p for p in prompts[first:])
    for ids, labels, _ in samples:
        reply = labels[labels != -100]
        assert reply[-1] == tokenizer.eos_token_id and torch.equal(ids[-reply.numel():], reply)


def test_two_short_runs_write_identical_weights(tmp_path):
    logs = [training.train(tmp_path / name, steps=2, minutes=None, batch_size=4, lr=1e-3, seed=0, threads=1,
                           first_stage_steps=1) for name in ("a", "b")]
    assert logs[0]["steps"] == 2 and logs[0]["first_stage_steps"] == 1
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    trained = load_tiny_focus_llava(tmp_path / "a")[0].state_dict()
    untrained = training.build_tiny_focus_llava(seed=0)[0].state_dict()
    assert trained.keys() == untrained.keys()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)
