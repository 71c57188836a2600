"""FocusWrapper end to end on tiny random multi-image models (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL,
InternVL, Gemma 3; CPU, offline)."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from focus_modules import FocusConfig, FocusWrapper

pytestmark = pytest.mark.slow

N_STEPS = 2


def make_images():
    rng = np.random.default_rng(1)
    noise = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    return [
        Image.fromarray(noise(90, 150)),  # landscape
        Image.fromarray(noise(160, 70)),  # portrait
        Image.fromarray(noise(40, 260)).convert("L"),  # very wide, grayscale
        Image.fromarray(noise(24, 30)),  # smaller than a tile / the minimum view
    ]


QUESTIONS = [
    "What is the color of the cat?",
    "Is the red car on the left or right side of the white truck?",
    "How many birds are there in the image?",
    "What is the color of the cup?",
]
OPTIONS = [["red", "blue", "green", "yellow"], ["left", "right"], ["A", "B", "C", "D"], None]
TARGETS = [["cat"], ["red car", "white truck"], ["all birds"], None]


# preset family -> fixture of its tiny model (tests/conftest.py)
TINY_MODELS = {
    "llava-onevision": "tiny_onevision",
    "qwen2.5-vl": "tiny_qwen2_5_vl",
    "qwen3-vl": "tiny_qwen3_vl",
    "internvl": "tiny_internvl",
    "gemma3": "tiny_gemma3",
}


@pytest.fixture(scope="module", params=list(TINY_MODELS))
def wrapper(request):
    model, processor = request.getfixturevalue(TINY_MODELS[request.param])
    config = FocusConfig.preset(request.param, n_steps=N_STEPS, layers=(2, 4))
    return FocusWrapper(model, processor, config, max_new_tokens=4, target_max_new_tokens=8)


@pytest.fixture(scope="module")
def batched(wrapper):
    return wrapper.answer(make_images(), QUESTIONS, OPTIONS, targets=TARGETS)


def comparable(result):
    return dataclasses.replace(
        result,
        timings={},
        relevance_maps=[],
        map_extents=[],
        rois=[[(tuple(round(v, 3) for v in r.box), r.confidence is None) for r in rois] for rois in result.rois],
    )


def test_batched_equals_one_at_a_time(wrapper, batched):
    images = make_images()
    single = [
        wrapper.answer([image], [q], [o], targets=[t])[0] for image, q, o, t in zip(images, QUESTIONS, OPTIONS, TARGETS)
    ]
    for a, b in zip(batched, single):
        assert comparable(a) == comparable(b)
        for map_a, map_b, rois_a, rois_b in zip(a.relevance_maps, b.relevance_maps, a.rois, b.rois):
            torch.testing.assert_close(map_a, map_b, rtol=1e-4, atol=1e-6)
            # an ROI's relevance is its anchor's score on the min-max normalised map: the anchor, the
            # minimum and the spread each move by at most the maps' difference, divided by the spread
            # (the bound for an unsmoothed map, Gemma 3's; the smoothed families keep the fixed 1e-5)
            spread = float(map_b.max() - map_b.min())
            tolerance = 1e-5 + 4 * float((map_a - map_b).abs().max()) / spread
            for ra, rb in zip(rois_a, rois_b):
                assert ra.relevance == pytest.approx(rb.relevance, abs=tolerance)
                if ra.confidence is not None:
                    assert ra.confidence == pytest.approx(rb.confidence, abs=1e-4)


def test_results_are_well_formed(wrapper, batched):
    for image, result in zip(make_images(), batched):
        width, height = image.size
        assert isinstance(result.answer, str)
        assert len(result.rois) == len(result.relevance_maps) == len(result.targets)
        for rois, relevance in zip(result.rois, result.relevance_maps):
            assert relevance.dim() == 2 and torch.isclose(relevance.sum(), torch.tensor(1.0), atol=1e-5)
            assert rois, "every target gets proposals"
            for roi in rois:
                x1, y1, x2, y2 = roi.box
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        fp = result.forward_passes
        targets = len(result.targets)  # several: one prefix pass + one suffix pass per target
        assert fp["relevance"] == (targets + 1 if targets > 1 else targets) and fp["answer"] == 1
        if result.question_type == 1:
            assert fp["verify"] >= min(N_STEPS, sum(map(len, result.rois)))
        if result.final_view == "multi-image":
            assert result.final_boxes
        else:  # no ROI selected (type 2 with nothing above t_type2) or no target: the whole image
            assert result.final_view == "image"
    assert batched[0].final_view == "multi-image" and len(batched[0].final_boxes) == 1
    assert batched[1].final_view == "multi-image" and len(batched[1].final_boxes) == 2
    assert batched[2].question_type == 2


def test_relevance_map_shape_follows_the_family(wrapper, batched):
    adapter = wrapper.adapter
    for image, result in zip(make_images(), batched):
        if not result.targets:
            continue
        seen, note = adapter.fit_aspect_ratio(image.convert("RGB"))  # the image as the model was shown it
        assert bool(note) == bool(result.notes)
        enc = adapter.encode_existence(seen, result.targets[0])
        assert tuple(result.relevance_maps[0].shape) == enc.grid_hw


@pytest.mark.parametrize("family", list(TINY_MODELS))
def test_focus_ask_loads_a_saved_tiny_model(family, request, tmp_path, capsys):
    """``focus ask`` on the saved model and processor (``from_pretrained`` through
    AutoModelForImageTextToText / AutoProcessor, offline) picks the family's adapter."""
    import json

    from focus_modules import cli

    model, processor = request.getfixturevalue(TINY_MODELS[family])
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    image = tmp_path / "photo.png"
    make_images()[0].save(image)
    argv = [
        "ask",
        str(image),
        "What is the color of the cat?",
        "--option",
        "red",
        "--option",
        "blue",
        "--model",
        str(tmp_path / "model"),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--n-steps",
        "1",
        "--set",
        "layers=2,4",
        "--json",
    ]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed["answer"], str) and printed["targets"]
    width, height = make_images()[0].size
    boxes = [roi["box"] for rois in printed["rois"] for roi in rois]
    assert boxes and all(0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height for x1, y1, x2, y2 in boxes)
