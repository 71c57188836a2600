"""The windowed relevance phase (FocusConfig.window_size) through FocusWrapper on tiny random
models: settings and their errors, windowing off is the global phase unchanged, one window over
the whole image is the global map, batched equals one at a time, forward passes follow the
window layout, and every family that encodes a crop runs it."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_prefix_reuse import rounding_tolerance

from focus_modules import FocusConfig, FocusWrapper
from focus_modules.adapters import adapter_for
from focus_modules.cli import parse_overrides
from focus_modules.config import FAMILIES, read_model_settings
from focus_modules.functional import relevance_map
from focus_modules.modules.value_capture import ValueCapture
from focus_modules.ops.boxes import image_cell_mask
from focus_modules.ops.stitch_maps import window_count

pytestmark = pytest.mark.slow

WINDOW = 64  # pixels; the tiny LLaVA's 96-px view has a 12 x 12 grid, so windows have 5.33-px cells


def noise(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


IMAGES = [(200, 120), (90, 161), (50, 40)]  # several windows; odd sizes; smaller than a window
QUESTIONS = [
    "What is the color of the cat?",
    "Is the red car on the left or right side of the white truck?",
    "What is the color of the dog?",
]
TARGETS = [["cat"], ["red car", "white truck"], ["dog"]]
OPTIONS = [["red", "blue"], ["left", "right"], None]


def images():
    return [noise(w, h, seed=i) for i, (w, h) in enumerate(IMAGES)]


def llava_config(**fields):
    return FocusConfig.preset("llava-1.5", n_steps=1, layers=(2, 4), **fields)


# --- settings ---------------------------------------------------------------------------------


def test_windowing_is_off_in_every_preset():
    assert FocusConfig().window_size is None
    for family in FAMILIES:
        assert FocusConfig.preset(family).window_size is None


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"window_size": 0}, "window_size must be a positive number of pixels or None, got 0"),
        ({"window_size": -512}, "window_size must be a positive number of pixels"),
        ({"window_size": True}, "window_size must be a positive number of pixels"),
        ({"window_overlap": 1.0}, r"window_overlap must lie in \[0, 1\), got 1.0"),
        ({"window_overlap": -0.1}, r"window_overlap must lie in \[0, 1\)"),
        ({"window_size": 4, "window_overlap": 0.9}, "moves the windows by less than one pixel"),
        ({"window_combine": "sum"}, r"window_combine must be one of \('mean', 'max'\), got 'sum'"),
    ],
)
def test_bad_window_settings_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message) as err:
        FocusConfig(**fields)
    assert "\n" not in str(err.value)


def test_window_settings_from_the_command_line_and_a_model_folder(tmp_path):
    assert parse_overrides(["window_size=2048", "window_overlap=0.25", "window_combine=max"]) == {
        "window_size": 2048,
        "window_overlap": 0.25,
        "window_combine": "max",
    }
    assert parse_overrides(["window_size=none"]) == {"window_size": None}
    with pytest.raises(ValueError, match="window_size expects"):
        parse_overrides(["window_size=big"])
    (tmp_path / "focus_config.json").write_text(json.dumps({"window_size": 1024, "window_combine": "max"}))
    assert read_model_settings(tmp_path) == {"window_size": 1024, "window_combine": "max"}
    (tmp_path / "focus_config.json").write_text(json.dumps({"window_combine": "median"}))
    with pytest.raises(ValueError, match="window_combine must be one of"):
        read_model_settings(tmp_path)


# --- windowing off: the global phase, unchanged ----------------------------------------------


def test_windowing_off_is_the_global_phase(tiny_llava):
    """With ``window_size=None`` the other window settings change nothing, and the maps and
    ROIs are the documented global pipeline's: one existence prompt per target on the whole
    image, ``relevance_map``, ``RoiProposer``, cells to pixels."""
    model, processor = tiny_llava
    config = llava_config()
    image = noise(200, 120)
    [plain] = FocusWrapper(model, processor, config, max_new_tokens=2).answer(
        [image], ["What is the color of the cat?"], targets=[["cat"]]
    )
    other = dataclasses.replace(config, window_overlap=0.25, window_combine="max")
    [same] = FocusWrapper(model, processor, other, max_new_tokens=2).answer(
        [image], ["What is the color of the cat?"], targets=[["cat"]]
    )
    assert torch.equal(plain.relevance_maps[0], same.relevance_maps[0])
    assert plain.rois == same.rois and plain.answer == same.answer and plain.forward_passes == same.forward_passes
    adapter = adapter_for(model, processor)
    [enc] = adapter.encode_existence_targets(image, ["cat"])
    batch = adapter.collate([enc])
    with torch.inference_mode(), ValueCapture(model, config.layers, decoder_layers=adapter.decoder_layers()) as capture:
        adapter.last_logits(batch)
        values = capture.values
    offset = batch.offsets[0]
    grid_hw = torch.tensor([enc.grid_hw])
    maps = relevance_map(
        values,
        (enc.target_positions + offset)[None],
        (enc.visual_positions + offset)[None],
        grid_hw,
        batch.inputs["attention_mask"],
    )
    assert torch.equal(plain.relevance_maps[0], maps[0])
    from focus_modules import RoiProposer

    rois = RoiProposer.from_config(config)(maps, grid_hw, enc.valid_cells[None])
    pixels = adapter.cells_to_pixels(rois.boxes[0][rois.valid[0]], enc.geometry)
    assert sorted(tuple(r.box) for r in plain.rois[0]) == sorted(tuple(b) for b in pixels.tolist())
    assert plain.forward_passes["relevance"] == 1


# --- windowing on ----------------------------------------------------------------------------


def test_one_window_over_the_whole_image_is_the_global_map(tiny_llava):
    """A window as large as the image is the image: its map is the global map, read on the
    stitched grid (the global grid without the padding rows past the image), renormalised over
    the image's cells; the ROIs and the answer are the global phase's."""
    model, processor = tiny_llava
    image, question = noise(200, 120), "What is the color of the cat?"
    [glob] = FocusWrapper(model, processor, llava_config(), max_new_tokens=2).answer(
        [image], [question], targets=[["cat"]]
    )
    windowed = FocusWrapper(model, processor, llava_config(window_size=200), max_new_tokens=2)
    [win] = windowed.answer([image], [question], targets=[["cat"]])
    # LLaVA pads 200 x 120 to a 200-px square (40 px above): 12 x 12 cells of 16.67 px; the
    # stitched grid starts at the same origin and stops after the image: ceil(160 / 16.67) = 10 rows
    assert win.relevance_maps[0].shape == (10, 12)
    assert win.map_extents[0] == pytest.approx((0.0, -40.0, 200.0, -40.0 + 10 * 200 / 12))
    geometry = windowed.adapter.prepare_image(image)[1]
    inside = image_cell_mask(type(geometry)(*(f[None] for f in geometry)), torch.tensor([[10, 12]]), 10, 12)[0]
    expected = torch.where(inside, glob.relevance_maps[0][:10].double(), 0.0)
    expected /= expected.sum()
    # float64 arithmetic on the same fp32 map, rounded once to fp32
    torch.testing.assert_close(win.relevance_maps[0].double(), expected, rtol=2**-22, atol=0)
    assert [[r.box for r in rois] for rois in win.rois] == [[r.box for r in rois] for rois in glob.rois]
    assert win.answer == glob.answer and win.forward_passes == glob.forward_passes


def expected_passes(size, targets, reuse):
    windows = window_count(size, WINDOW, 0.5)
    if not reuse:
        return windows * len(targets)
    return windows * (1 if len(targets) == 1 else 1 + len(targets))


@pytest.mark.parametrize("combine", ["mean", "max"])
def test_windowed_batched_equals_one_at_a_time_and_counts_each_window(tiny_llava, combine):
    model, processor = tiny_llava
    config = llava_config(window_size=WINDOW, window_combine=combine)
    wrapper = FocusWrapper(model, processor, config, max_new_tokens=2)
    batched = wrapper.answer(images(), QUESTIONS, OPTIONS, targets=TARGETS)
    single = [
        wrapper.answer([im], [q], [o], targets=[t])[0] for im, q, o, t in zip(images(), QUESTIONS, OPTIONS, TARGETS)
    ]
    grouped = wrapper.answer(images(), QUESTIONS, OPTIONS, targets=TARGETS, batch_size=2)
    rtol = rounding_tolerance(model, 200)
    for size, targets, a, b, c in zip(IMAGES, TARGETS, batched, single, grouped):
        assert a.forward_passes["relevance"] == expected_passes(size, targets, reuse=True)
        assert a.forward_passes == b.forward_passes == c.forward_passes
        assert a.answer == b.answer == c.answer
        cell = WINDOW / 12
        width, height = size
        for heat, extent in zip(a.relevance_maps, a.map_extents):
            # windows inside the image start at 0; a window taller (wider) than the image is
            # padded to a square by LLaVA and starts above (left of) it
            origin_x = (
                0.0
                if width >= WINDOW
                else -((WINDOW - width) // 2)
                if height >= WINDOW
                else -((max(size) - width) // 2)
            )
            origin_y = (
                0.0
                if height >= WINDOW
                else -((WINDOW - height) // 2)
                if width >= WINDOW
                else -((max(size) - height) // 2)
            )
            if max(size) <= WINDOW:  # one window: the image, padded to its own square
                cell = max(size) / 12
            assert extent[:2] == pytest.approx((origin_x, origin_y))
            assert heat.shape == (
                math.ceil((height - origin_y) / cell - 1e-9),
                math.ceil((width - origin_x) / cell - 1e-9),
            )
            assert float(heat.sum()) == pytest.approx(1.0, rel=1e-5)
        for other in (b, c):
            for map_a, map_o in zip(a.relevance_maps, other.relevance_maps):
                torch.testing.assert_close(map_o, map_a, rtol=10 * rtol, atol=10 * rtol * float(map_a.max()))
            assert [[r.box for r in rois] for rois in a.rois] == [[r.box for r in rois] for rois in other.rois]
        for rois in a.rois:
            for roi in rois:
                x1, y1, x2, y2 = roi.box
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_without_prefix_reuse_each_target_pays_each_window(tiny_llava):
    model, processor = tiny_llava
    wrapper = FocusWrapper(model, processor, llava_config(window_size=WINDOW), max_new_tokens=2, reuse_prefix=False)
    results = wrapper.answer(images(), QUESTIONS, OPTIONS, targets=TARGETS)
    assert [r.forward_passes["relevance"] for r in results] == [
        expected_passes(size, targets, reuse=False) for size, targets in zip(IMAGES, TARGETS)
    ]
    # by hand: 200 x 120 has ceil(136 / 32) + 1 = 6 x ceil(56 / 32) + 1 = 3 windows (one target);
    # 90 x 161 has 2 x 5 (two targets); 50 x 40 fits one window
    assert [r.forward_passes["relevance"] for r in results] == [18, 20, 1]


FAMILY_FIXTURES = {
    "llava-onevision": "tiny_onevision",
    "qwen2.5-vl": "tiny_qwen2_5_vl",
    "qwen3-vl": "tiny_qwen3_vl",
    "internvl": "tiny_internvl",
    "gemma3": "tiny_gemma3",
}


@pytest.mark.parametrize("family", list(FAMILY_FIXTURES))
def test_every_family_that_encodes_a_crop_runs_windows(request, family):
    model, processor = request.getfixturevalue(FAMILY_FIXTURES[family])
    config = FocusConfig.preset(family, n_steps=1, layers=(2, 4), window_size=WINDOW)
    wrapper = FocusWrapper(model, processor, config, max_new_tokens=2)
    size, targets = IMAGES[1], TARGETS[1]
    [result] = wrapper.answer([noise(*size, seed=1)], [QUESTIONS[1]], targets=[targets])
    assert result.forward_passes["relevance"] == expected_passes(size, targets, reuse=True)
    width, height = size
    for heat, extent, rois in zip(result.relevance_maps, result.map_extents, result.rois):
        assert float(heat.sum()) == pytest.approx(1.0, rel=1e-5)
        assert extent[0] <= 0 and extent[1] <= 0 and extent[2] >= width and extent[3] >= height
        assert rois and all(0 <= r.box[0] < r.box[2] <= width and 0 <= r.box[1] < r.box[3] <= height for r in rois)


def test_a_planted_feature_in_a_window_comes_back_at_its_pixel_place(tiny_llava, monkeypatch):
    """Window maps that peak where each crop shows a white dot (found in the crop the adapter
    was given, placed through the crop's own geometry) stitch into a map whose peak and best
    ROI hold the dot's pixel in the original image: the wrapper shifts each window's cells by
    its crop's corner."""
    model, processor = tiny_llava
    pixels = np.full((200, 300, 3), 90, dtype=np.uint8)
    dot = (233, 71)  # (x, y) of a 2 x 2 white dot
    pixels[dot[1] : dot[1] + 2, dot[0] : dot[0] + 2] = 255
    wrapper = FocusWrapper(model, processor, llava_config(window_size=WINDOW), max_new_tokens=2)
    shown, windows = [], []
    encode = wrapper.adapter.encode_existence_targets

    def recording(view, targets):
        encodings = encode(view, targets)
        shown.extend((np.asarray(view), enc) for enc in encodings)
        return encodings

    def planted(values, target_idx, visual_idx, grid_hw, attention_mask=None):
        windows.extend(shown)  # the window prompts (verification encodes crops later)
        maps = torch.zeros(len(shown), int(grid_hw[:, 0].max()), int(grid_hw[:, 1].max()))
        for p, (view, enc) in enumerate(shown):
            h, w = enc.grid_hw
            maps[p, :h, :w] = 1.0
            ys, xs = np.nonzero(view.min(-1) == 255)
            if len(xs):
                col = int((xs.mean() + 0.5 - float(enc.geometry.origin[0])) // float(enc.geometry.cell_size[0]))
                row = int((ys.mean() + 0.5 - float(enc.geometry.origin[1])) // float(enc.geometry.cell_size[1]))
                maps[p, row, col] = 40.0
        return maps / maps.sum((1, 2), keepdim=True)

    monkeypatch.setattr(wrapper.adapter, "encode_existence_targets", recording)
    monkeypatch.setattr(wrapper, "relevance", planted)
    [result] = wrapper.answer([Image.fromarray(pixels)], ["What is the color of the cat?"], targets=[["cat"]])
    assert len(windows) == window_count((300, 200), WINDOW, 0.5)
    assert sum(1 for view, _ in windows if (view.min(-1) == 255).any()) == 4  # the dot is in 2 x 2 windows
    heat, extent = result.relevance_maps[0], result.map_extents[0]
    h, w = heat.shape
    cell_w, cell_h = (extent[2] - extent[0]) / w, (extent[3] - extent[1]) / h
    row, col = divmod(int(heat.argmax()), w)
    x, y = dot[0] + 1.0, dot[1] + 1.0  # the dot's centre
    # windows off the stitched grid put a cell at most one stitched cell away
    assert abs(extent[0] + (col + 0.5) * cell_w - x) <= 1.5 * cell_w
    assert abs(extent[1] + (row + 0.5) * cell_h - y) <= 1.5 * cell_h
    best = max(result.rois[0], key=lambda roi: roi.relevance)  # the ROI of the map's peak
    x1, y1, x2, y2 = best.box
    assert x1 <= x < x2 and y1 <= y < y2
