"""ViCrop (rel-att, grad-att) in FOCUS's harness: the box and tiling ops, the attention maps
against the eager attention weights, pass counts, batching, and the model left as it was."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from focus_modules.adapters.base import FinalView
from focus_modules.baselines.vicrop import (
    GENERAL_QUESTION,
    QUESTION_TEMPLATE,
    VICROP_SETTINGS,
    GradAttViCrop,
    RelAttViCrop,
    eager_attention,
    vicrop_layer,
)
from focus_modules.ops.vicrop_box import (
    CROP_RATIOS,
    stitch_tiles,
    tile_boxes,
    vicrop_box,
    vicrop_box_reference,
    vicrop_tiles,
)
from focus_modules.results import FocusResult
from focus_modules.wrapper import FocusWrapper

FAMILIES = ["tiny_llava", "tiny_onevision", "tiny_qwen2_5_vl", "tiny_qwen3_vl", "tiny_internvl", "tiny_gemma3"]
METHODS = {"vicrop-rel": (RelAttViCrop, 2), "vicrop-grad": (GradAttViCrop, 1)}  # prompts per tile
EPS = torch.finfo(torch.float32).eps


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    """Random RGB pixels (no two tokens alike, so maps have no ties)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def attention_implementations(model) -> list[tuple[str, str]]:
    """Every (sub-)model's attention implementation."""
    return [
        (name, module.config._attn_implementation)
        for name, module in model.named_modules()
        if hasattr(module, "config") and hasattr(module, "set_attn_implementation")
    ]


def map_tolerance(model) -> float:
    """Relative fp32 error bound of a map read off the model: every decoder layer's matmuls
    (dot products of length ``hidden``) carry a relative rounding error of at most about
    ``hidden * eps``, in the forward and (grad-att) the backward pass; padding a prompt in a
    batch changes only their summation order. Factor 2: a ratio of two such maps (rel-att)."""
    text = model.config.get_text_config()
    return 2 * text.num_hidden_layers * text.hidden_size * EPS


# --- ops: tiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (1, 1, 640, 480)),
        ((1024, 1024), (1, 1, 1024, 1024)),
        ((2246, 1582), (2, 2, 1123, 791)),  # a V* image: 2 x 2 tiles
        ((3840, 2160), (3, 5, 768, 720)),
        ((600, 900), (1, 1, 600, 900)),  # portrait: the public code's cols = int(0.67) = 0
        ((900, 3000), (3, 1, 900, 1000)),  # portrait: cols = int(0.9) = 0 there
        ((1500, 1100), (2, 2, 750, 550)),
        ((701, 1025), (2, 1, 701, 513)),  # odd sizes: ceil
    ],
)
def test_tiles_rule(size, expected):
    width, height = size
    rows, cols, tile_w, tile_h = vicrop_tiles(width, height)
    assert (rows, cols, tile_w, tile_h) == expected
    boxes = tile_boxes(rows, cols, tile_w, tile_h)
    assert len(boxes) == rows * cols
    assert boxes[0][:2] == (0, 0) and boxes[-1][2] >= width and boxes[-1][3] >= height  # covers the image
    assert all(box[0] < width and box[1] < height for box in boxes)  # every tile shows some image


def test_tiles_reject_empty_images():
    with pytest.raises(ValueError, match="non-empty"):
        vicrop_tiles(0, 10)


def test_stitch_places_tiles_row_major():
    maps = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 2, 3)  # tile t is all t
    stitched = stitch_tiles(maps, rows=2, cols=3)
    assert stitched.shape == (4, 9)
    expected = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.float32).repeat_interleave(2, 0).repeat_interleave(3, 1)
    assert torch.equal(stitched, expected)
    with pytest.raises(ValueError, match="tile maps"):
        stitch_tiles(maps, rows=2, cols=2)


# --- ops: box selection ----------------------------------------------------------------------------


def test_box_hand_computed():
    """A 4 x 4 map of 100-px cells with one peak at column 2, row 1; crop side 100. Ratios
    1-1.8 take 1-cell windows (peak window 10, neighbours 0: sharpness 10); ratio 2 takes
    2-cell windows (sharpness (10 - 20/3) / 4): ratio 1 wins, centred on the peak cell."""
    att = torch.zeros(4, 4)
    att[1, 2] = 10.0
    for select in (vicrop_box, vicrop_box_reference):
        assert select(att, (100.0, 100.0), (400, 400), 100) == (200.0, 100.0, 300.0, 200.0)


@pytest.mark.parametrize("shape", [(23, 17), (9, 31), (5, 5), (24, 24)])
@pytest.mark.parametrize("peak", [(0.1, 0.2), (0.5, 0.5), (0.95, 0.9)])
def test_planted_peak_gives_a_box_around_it(shape, peak):
    h, w = shape
    row, col = min(int(peak[0] * h), h - 1), min(int(peak[1] * w), w - 1)
    generator = torch.Generator().manual_seed(h * 100 + w)
    att = torch.rand(h, w, generator=generator) * 0.1
    att[row, col] = 50.0
    cell = (17.0, 13.0)
    image = (w * cell[0] - 5, h * cell[1] - 3)  # the map reaches a little past the image
    bbox = 40
    box = vicrop_box(att, cell, image, bbox)
    centre = ((col + 0.5) * cell[0], (row + 0.5) * cell[1])
    assert box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]
    assert 0 <= box[0] < box[2] <= image[0] and 0 <= box[1] < box[3] <= image[1]
    sides = {2 * math.floor(bbox * r / 2) for r in CROP_RATIOS}
    for lo, hi, extent in ((box[0], box[2], image[0]), (box[1], box[3], image[1])):
        assert hi - lo in sides or hi - lo == extent  # a tried side, or cut to the image
    assert box == vicrop_box_reference(att, cell, image, bbox)


@pytest.mark.parametrize("seed", range(6))
def test_box_matches_reference_on_random_maps(seed):
    generator = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(3, 30, (2,), generator=generator))
    att = torch.rand(h, w, generator=generator, dtype=torch.float64).to(torch.float32 if seed % 2 else torch.float64)
    cell = tuple(float(v) for v in torch.rand(2, generator=generator) * 40 + 5)
    image = (w * cell[0], h * cell[1])
    bbox = float(torch.randint(10, 200, (1,), generator=generator))
    assert vicrop_box(att, cell, image, bbox) == vicrop_box_reference(att, cell, image, bbox)


def test_box_whole_image_when_the_crop_covers_the_map():
    att = torch.rand(6, 8)
    assert vicrop_box(att, (10.0, 10.0), (80, 60), 100) == (0.0, 0.0, 80.0, 60.0)
    assert vicrop_box_reference(att, (10.0, 10.0), (80, 60), 100) == (0.0, 0.0, 80.0, 60.0)


def test_box_window_is_at_least_one_cell():
    """Cells larger than the crop (a huge image, a coarse map): one-cell windows, no NaN."""
    att = torch.zeros(3, 3)
    att[2, 0] = 1.0
    box = vicrop_box(att, (500.0, 500.0), (1500, 1500), 336)
    assert box == vicrop_box_reference(att, (500.0, 500.0), (1500, 1500), 336)
    assert box[0] <= 250 <= box[2] and box[1] <= 1250 <= box[3]


def test_box_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        vicrop_box(torch.zeros(2, 2, 2), (1.0, 1.0), (4, 4), 2)
    with pytest.raises(ValueError, match="positive"):
        vicrop_box(torch.zeros(2, 2), (0.0, 1.0), (4, 4), 2)


# --- settings -------------------------------------------------------------------------------------


def test_layer_table_rescales_to_depth():
    assert set(VICROP_SETTINGS) == {"llava-1.5", "llava-onevision", "qwen2.5-vl", "qwen3-vl", "internvl", "gemma3"}
    assert vicrop_layer(VICROP_SETTINGS["llava-1.5"], 32) == 14  # ViCrop's LLaVA-1.5-7B
    assert vicrop_layer(VICROP_SETTINGS["qwen2.5-vl"], 36) == 22  # ViCrop's Qwen2.5-VL-3B
    assert vicrop_layer(VICROP_SETTINGS["qwen2.5-vl"], 28) == 17  # Qwen2.5-VL-7B
    assert vicrop_layer(VICROP_SETTINGS["llava-1.5"], 4) == 2  # round(1.75)
    assert vicrop_layer(VICROP_SETTINGS["gemma3"], 1) == 0


# --- end to end on every family -------------------------------------------------------------------


def expected_passes(method: str, images) -> list[dict[str, int]]:
    per_tile = METHODS[method][1]
    out = []
    for image in images:
        rows, cols, _, _ = vicrop_tiles(*image.size)
        passes = {"attention": per_tile * rows * cols, "answer": 1}
        if method == "vicrop-grad":
            passes["attention_backward"] = rows * cols
        out.append(passes)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_end_to_end_every_family(family, request):
    model, processor = request.getfixturevalue(family)
    wrapper = FocusWrapper(model, processor)
    images = [noise_image(320, 240, seed=1), noise_image(500, 1100, seed=2)]  # one tile; 2 x 1 tiles
    questions = ["What is the color of the cup?", "Which side is the dog on?"]
    before = attention_implementations(model)
    focus_before = wrapper.answer(images, questions, targets=[["cup"], ["dog"]])
    tol = map_tolerance(model)
    for method in METHODS:
        batched = wrapper.answer(images, questions, method=method)
        assert attention_implementations(model) == before
        for image, result, passes, question in zip(images, batched, expected_passes(method, images), questions):
            counted = {phase: n for phase, n in result.forward_passes.items() if n}
            assert counted == passes
            assert result.method == method and result.final_view == "vicrop"
            [[roi]] = result.rois
            assert result.final_boxes == [roi.box]
            assert 0 <= roi.box[0] < roi.box[2] <= image.width and 0 <= roi.box[1] < roi.box[3] <= image.height
            [heat] = result.relevance_maps
            rows, cols, tile_w, tile_h = vicrop_tiles(*image.size)
            assert result.map_extents == [(0.0, 0.0, float(cols * tile_w), float(rows * tile_h))]
            assert heat.shape[0] % rows == 0 and heat.shape[1] % cols == 0
            assert torch.isfinite(heat).all() and heat.max() > 0
            [single] = wrapper.answer([image], [question], method=method)
            assert single.rois[0][0].box == roi.box  # batched equals single
            torch.testing.assert_close(single.relevance_maps[0], heat, rtol=tol, atol=tol * float(heat.abs().max()))
            assert single.answer == result.answer
    focus_after = wrapper.answer(images, questions, targets=[["cup"], ["dog"]])
    for old, new in zip(focus_before, focus_after):  # FOCUS runs as before
        assert new.answer == old.answer and new.forward_passes == old.forward_passes
        assert [[r.box for r in rois] for rois in new.rois] == [[r.box for r in rois] for rois in old.rois]
        for a, b in zip(new.relevance_maps, old.relevance_maps):
            assert torch.equal(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_prompt_has_the_existence_layout(family, request):
    """``encode_image_prompt`` reads the same grid as the existence prompt of the same image."""
    model, processor = request.getfixturevalue(family)
    adapter = FocusWrapper(model, processor).adapter
    image = noise_image(300, 200, seed=3)
    prompt = adapter.encode_image_prompt(image, "Which side is the dog on?")
    existence = adapter.encode_existence(image, "dog")
    assert prompt.grid_hw == existence.grid_hw and prompt.target_positions is None
    assert torch.equal(prompt.valid_cells, existence.valid_cells)
    for a, b in zip(prompt.geometry, existence.geometry):
        assert torch.equal(a, b)
    image_tokens = prompt.input_ids[prompt.visual_positions]
    assert torch.equal(image_tokens, existence.input_ids[existence.visual_positions])
    assert len(set(prompt.visual_positions.tolist())) == prompt.grid_hw[0] * prompt.grid_hw[1]


@pytest.mark.parametrize("family", ["tiny_llava", "tiny_onevision"])
def test_final_view_is_image_and_crop(family, request):
    """Two images: the whole image and the crop. LLaVA-1.5 shows the image as it is; the
    multi-image families outline the box, as their final prompt's preamble says."""
    model, processor = request.getfixturevalue(family)
    adapter = FocusWrapper(model, processor).adapter
    image = noise_image(200, 120, seed=4)
    view = adapter.image_and_crop_view(image, (20.0, 30.0, 80.0, 90.0), "vicrop")
    assert view.kind == "vicrop" and view.boxes == [(20.0, 30.0, 80.0, 90.0)] and len(view.images) == 2
    assert view.images[1].size == (60, 60)
    outlined = view.images[0].tobytes() != image.tobytes()
    assert outlined == (family != "tiny_llava")
    encoding = adapter.encode_answer(view, "What is the color of the cup?", None)
    assert encoding.input_ids.numel() > 0


# --- the maps against the eager attention weights ---------------------------------------------------


def eager_reference(model, adapter, layer: int, image: Image.Image, question: str, method: str):
    """ViCrop's code on one prompt: ``output_attentions`` of the eager model at ``layer``,
    last query, image tokens, mean over heads (rel-att: divided by the general prompt's;
    grad-att: times ReLU of the gradient of -CE(last logits, argmax))."""

    def attention_row(text: str, grad: bool):
        encoding = adapter.encode_image_prompt(image, QUESTION_TEMPLATE.format(question=text))
        batch = adapter.collate([encoding])
        out = model(**batch.inputs, output_attentions=True, use_cache=False)
        attention = out.attentions[layer]
        if grad:
            logits = out.logits[:, -1].float()
            loss = -F.cross_entropy(logits, logits.argmax(-1))
            (g,) = torch.autograd.grad(loss, attention)
            attention = attention * g.relu()
        row = attention[0, :, -1, encoding.visual_positions].float().mean(0)
        return row.reshape(encoding.grid_hw).detach()

    attention = adapter.decoder_layers()[layer].self_attn
    with torch.inference_mode(False), torch.enable_grad(), eager_attention(model, attention):
        if method == "vicrop-rel":
            return attention_row(question, False) / attention_row(GENERAL_QUESTION, False)
        return attention_row(question, True)


@pytest.mark.parametrize("family", ["tiny_llava", "tiny_qwen2_5_vl"])
@pytest.mark.parametrize("method", list(METHODS))
def test_maps_equal_eager_attention_weights(family, method, request):
    """Square (LLaVA: no padding cells) one-tile images, asked in one padded batch."""
    model, processor = request.getfixturevalue(family)
    wrapper = FocusWrapper(model, processor)
    searcher = METHODS[method][0](wrapper.adapter)
    layer = 2  # 4 layers: LLaVA-1.5's 14/32 -> round(1.75); Qwen2.5-VL's 22/36 -> round(2.44)
    assert searcher.layer == layer
    images = [noise_image(224, 224, seed=5), noise_image(336, 336, seed=6)]
    questions = ["What is the color of the cup?", "How many birds are there in the image?"]
    results = wrapper.answer(images, questions, method=method)
    tol = map_tolerance(model)
    for image, question, result in zip(images, questions, results):
        expected = eager_reference(model, wrapper.adapter, layer, image, question, method)
        # rel-att: a ratio of positive weights, elementwise relative error; grad-att: the
        # gradient's error is relative to the map's scale (ReLU zeros stay near zero)
        atol = 0.0 if method == "vicrop-rel" else tol * float(expected.abs().max())
        torch.testing.assert_close(result.relevance_maps[0], expected, rtol=tol, atol=atol)
        assert result.rois[0][0].box == vicrop_box_reference(
            expected, [e / n for e, n in zip(image.size, expected.shape[::-1])], image.size, searcher.bbox_size
        )


@dataclass
class Task:
    """A :class:`~focus_modules.baselines.SearchTask` outside the wrapper."""

    image: Image.Image
    question: str
    options: list[str] | None = None
    given_targets: list[str] | None = None
    result: FocusResult = field(default_factory=lambda: FocusResult(answer="", targets=[], question_type=1))
    view: FinalView | None = None


def test_explicit_layer_is_read(tiny_llava):
    """A method built for another layer reads that layer; ``search`` runs outside the wrapper."""
    model, processor = tiny_llava
    adapter = FocusWrapper(model, processor).adapter
    searcher = RelAttViCrop(adapter, layer=0)
    assert RelAttViCrop(adapter).layer != 0
    task = Task(noise_image(96, 96, seed=7), "What is the color of the cup?")
    with torch.inference_mode():
        searcher.search([task])
        expected = eager_reference(model, adapter, 0, task.image, task.question, "vicrop-rel")
    tol = map_tolerance(model)
    torch.testing.assert_close(task.result.relevance_maps[0], expected, rtol=tol, atol=0.0)
    assert task.result.forward_passes["attention"] == 2
    assert task.view.kind == "vicrop" and task.view.boxes == [task.result.rois[0][0].box]
    with pytest.raises(ValueError, match="outside"):
        RelAttViCrop(adapter, layer=adapter.num_layers())


def test_attention_implementation_restored_after_an_error(tiny_llava):
    model, _ = tiny_llava
    before = attention_implementations(model)
    attention = model.model.language_model.layers[0].self_attn
    with pytest.raises(RuntimeError, match="boom"):
        with eager_attention(model, attention):
            assert attention.config._attn_implementation == "eager"
            assert model.config.vision_config._attn_implementation == "sdpa"  # the tower keeps its own
            raise RuntimeError("boom")
    assert attention_implementations(model) == before
