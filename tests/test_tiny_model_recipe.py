"""The tiny model's training recipe (examples/tiny_model): samples whose replies and patch targets
match the drawn pixels, a run that resumes where it stopped, and the probes script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "tiny_model"
sys.path.insert(0, str(RECIPE))

from data import (  # noqa: E402
    MARK_CLASSES,
    NUM_CLASSES,
    OBJECT_CLASSES,
    SampleMaker,
    TrainingScene,
    patch_fractions,
    scene_class_words,
)
from model import build_tiny_focus_llava  # noqa: E402

from focus_modules.adapters import LlavaAdapter  # noqa: E402
from focus_modules.config import SETTINGS_FILE  # noqa: E402
from focus_modules.synthetic import COLORS, MARK_COLORS  # noqa: E402
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, tiny_focus_config  # noqa: E402


@pytest.fixture(scope="module")
def maker():
    model, processor = build_tiny_focus_llava()
    return SampleMaker(LlavaAdapter(model, processor), tiny_focus_config())


@pytest.fixture(scope="module")
def training_scene():
    return TrainingScene.make((7001, 99, 0))


def test_class_image_labels_exactly_the_object_and_mark_pixels(training_scene):
    scene = training_scene.scene
    ids = np.asarray(training_scene.classes)[..., 0]
    pixels = np.asarray(scene.image)
    for color, class_id in OBJECT_CLASSES.items():
        assert np.array_equal(ids == class_id, np.all(pixels == COLORS[color], axis=-1))
    for obj in scene.objects:
        x1, y1, x2, y2 = obj.box
        inside = ids[y1:y2, x1:x2]
        assert (inside == MARK_CLASSES[obj.mark]).sum() == np.all(
            pixels[y1:y2, x1:x2] == MARK_COLORS[obj.mark], -1
        ).sum()
        assert (inside == MARK_CLASSES[obj.mark]).sum() > 0


def test_patch_fractions_follow_the_padded_square(maker, training_scene):
    scene = training_scene.scene
    obj = scene.objects[0]
    x1, y1, x2, y2 = obj.box
    side = 4 * max(x2 - x1, y2 - y1)
    box = (max(0, x1 - side // 2), y1, max(0, x1 - side // 2) + side, y1 + side // 2)  # a wide crop
    fractions = patch_fractions(maker.adapter, training_scene.classes.crop(box))
    assert fractions.shape == (256, NUM_CLASSES)
    np.testing.assert_allclose(fractions.sum(1), 1.0, rtol=1e-6)
    # a 2:1 crop is padded above and below: the top and bottom rows of patches are all background
    grid = fractions.reshape(16, 16, NUM_CLASSES)
    assert np.all(grid[0, :, 0] == 1.0) and np.all(grid[-1, :, 0] == 1.0)
    # the object's colour covers about as much of the view as of the crop
    crop_ids = np.asarray(training_scene.classes.crop(box))[..., 0]
    share = (crop_ids == OBJECT_CLASSES[obj.color]).sum() / (side * side)  # of the padded square
    assert fractions[:, OBJECT_CLASSES[obj.color]].mean() == pytest.approx(share, rel=0.05, abs=1e-4)


def test_class_words_name_colour_and_shape(maker, training_scene):
    vocab = maker.adapter.tokenizer.get_vocab()
    words = scene_class_words(training_scene.scene, maker.adapter.tokenizer)
    assert len(words) == NUM_CLASSES and words[0] == [vocab["background"]]
    obj = training_scene.scene.objects[0]
    assert words[OBJECT_CLASSES[obj.color]] == [vocab[obj.color], vocab[obj.shape]]
    assert words[MARK_CLASSES[obj.mark]] == [vocab[obj.mark], vocab["mark"]]


def test_existence_samples_are_decided_by_the_object_colour_in_the_crop(maker):
    answers = []
    for i in range(6):
        ts = TrainingScene.make((7001, 98, i))
        rng = np.random.default_rng(i)
        for positive in (True, False):
            found = maker.existence(ts, rng, positive)
            if found is None:
                continue
            encoding, reply, fractions = found
            text = maker.adapter.tokenizer.decode(encoding.input_ids)
            color, shape = text.split("Is there a ")[1].split(" in the image")[0].split()
            present = fractions[:, OBJECT_CLASSES[color]].sum() > 0
            assert reply == ("Yes" if positive else "No") and present == positive, (text, reply)
            answers.append(reply)
    assert {"Yes", "No"} == set(answers)


def test_instruction_samples_reply_with_the_scene_truth(maker):
    ts = TrainingScene.make((7001, 97, 0))
    samples = maker.instruction_samples(ts, np.random.default_rng(0))
    tokenizer = maker.adapter.tokenizer
    marks = {o.name: o.mark for o in ts.scene.objects}
    seen_mark = False
    for encoding, reply, fractions in samples:
        text = tokenizer.decode(encoding.input_ids)
        assert (fractions is None) == ("<image>" not in text)
        if fractions is not None and "mark color of the" in text and reply not in "ABCD":
            name = text.split("mark color of the ")[1].split("?")[0].strip()
            assert reply == marks[name]
            seen_mark = True
    assert seen_mark


def test_presence_weights_count_small_objects_fully_and_small_marks_in_part():
    from train import MARK_PRESENCE_SHARE, presence_weights

    fractions = torch.zeros(3, NUM_CLASSES)
    red, white = OBJECT_CLASSES["red"], MARK_CLASSES["white"]
    fractions[0, red], fractions[0, 0] = 0.03, 0.97  # an object on 3 % of the patch
    fractions[1, white], fractions[1, 0] = 0.03, 0.97  # a mark on 3 %
    fractions[2, red], fractions[2, OBJECT_CLASSES["blue"]], fractions[2, 0] = 0.5, 0.5, 0.0
    weights = presence_weights(fractions, object_share=0.02)
    assert weights[0, red] == 1.0 and weights[0, 0] == 0.0
    assert weights[1, white] == pytest.approx(0.03 / MARK_PRESENCE_SHARE) and weights[1, 0] == pytest.approx(0.7)
    assert weights[2, red] == weights[2, OBJECT_CLASSES["blue"]] == 0.5  # renormalised past 1
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    # at the older runs' share an object on 3 % of a patch counts 0.3
    assert presence_weights(fractions, object_share=0.1)[0, red] == pytest.approx(0.3)


def test_the_mark_question_is_asked_both_ways_on_the_tight_crop(maker):
    ts = TrainingScene.make((7001, 97, 0))
    samples = maker.instruction_samples(ts, np.random.default_rng(0))
    tokenizer = maker.adapter.tokenizer
    asked = [
        (tokenizer.decode(encoding.input_ids), reply)
        for encoding, reply, _ in samples
        if "mark color of the" in tokenizer.decode(encoding.input_ids)
    ]
    image_prompts = [(text, reply) for text, reply in asked if "<image>" in text]
    letters = [reply for text, reply in image_prompts if reply in ("A", "B", "C", "D") and "letter" in text]
    colours = [reply for text, reply in image_prompts if reply in MARK_COLORS]
    # per attribute question: multiple choice on an ROI view and on the tight crop; open-ended on both
    n = len(ts.scene.questions_of("attribute"))
    assert len(letters) >= 2 * n and len(colours) >= 2 * n


def test_training_runs_resumes_and_the_probes_read_the_checkpoint(tmp_path):
    base = [
        sys.executable,
        str(RECIPE / "train.py"),
        "--out",
        str(tmp_path / "run"),
        "--align-steps",
        "2",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--align-batch-size",
        "4",
        "--save-every",
        "2",
        "--workers",
        "0",
    ]
    first = subprocess.run(base[:4] + ["--minutes", "0.0001"] + base[4:], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 1  # the time limit stops it after the first step
    second = subprocess.run(base + ["--resume"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at step 1" in second.stdout
    log = json.loads((tmp_path / "run" / "training_log.json").read_text())
    assert log["steps"] == 4 and (tmp_path / "run" / "step_4" / "model.safetensors").is_file()
    # every checkpoint carries the run's FOCUS settings (by default the shipped model's)
    shipped = json.loads((SHIPPED_CHECKPOINT / SETTINGS_FILE).read_text())
    assert json.loads((tmp_path / "run" / "step_4" / SETTINGS_FILE).read_text()) == shipped
    probes = subprocess.run(
        [
            sys.executable,
            str(RECIPE / "probes.py"),
            "--model",
            str(tmp_path / "run"),
            "--scenes",
            "1",
            "--out",
            str(tmp_path / "links.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert probes.returncode == 0, probes.stderr[-3000:]
    results = json.loads(probes.stdout)
    assert {
        "step1_exact",
        "mark_ideal_crop",
        "mark_ideal_crop_open",
        "existence_roi_Yes",
        "map_hit_layers_0_6",
        "map_top10pct_layers_0_1_token0",
    } <= set(results)
    assert all(0.0 <= r["rate"] <= 1.0 and r["n"] > 0 for r in results.values())
    assert json.loads((tmp_path / "links.json").read_text())["results"] == results
