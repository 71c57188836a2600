"""InternVL adapter on a tiny random model (CPU, offline).

The grid test feeds images the size of their tile canvas (so the processor's stretch is the
identity), each 8-px patch coded by its row and column on the canvas; the vision tower is reduced
to reading those codes, the model's own pixel shuffle folds them 2 x 2, and the language model's
input read back at the adapter's positions must be the canvas, row-major across tiles.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_multi_image_adapters import find_module, lm_inputs, noise
from transformers.modeling_outputs import BaseModelOutputWithPooling

from focus_modules.adapters import InternVLAdapter, Selection, adapter_for
from focus_modules.config import FocusConfig
from focus_modules.ops.boxes import pixels_to_cells

PATCH = 8  # pixels per patch of the tiny tower; 64-px tiles -> 8 x 8 patches -> 4 x 4 tokens
STEP = 5  # pixel value step per patch of the planted image
# (width, height) = the canvas of (cols, rows) tiles: one tile (no thumbnail), landscape, portrait,
# 3 x 2, very wide and very tall
CANVASES = {
    (64, 64): (1, 1),
    (128, 64): (2, 1),
    (64, 192): (1, 3),
    (192, 128): (3, 2),
    (384, 64): (6, 1),
    (64, 384): (1, 6),
}


def patch_coded_image(width, height):
    """Each 8 x 8 patch is flat: red = STEP * patch row, green = STEP * patch column."""
    rows = np.repeat(np.arange(height // PATCH), PATCH)[:, None].repeat(width, 1)
    cols = np.repeat(np.arange(width // PATCH), PATCH)[None, :].repeat(height, 0)
    return Image.fromarray(np.stack([rows * STEP, cols * STEP, np.zeros_like(rows)], -1).astype(np.uint8))


@pytest.fixture(scope="module")
def adapter(tiny_internvl):
    return adapter_for(*tiny_internvl)


@pytest.fixture
def planted(tiny_internvl, monkeypatch):
    """Vision tower = each patch's mean colour (denormalised) after a zero CLS token; projector =
    mean over the 4 patches the pixel shuffle folded into a token."""
    model, processor = tiny_internvl
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    hidden = model.config.vision_config.hidden_size
    text_hidden = model.config.text_config.hidden_size

    def tower(pixel_values, **kwargs):
        colour = F.avg_pool2d(pixel_values * std + mean, PATCH)  # [T, 3, p, p] in [0, 1]
        codes = (colour * 255 / STEP).flatten(2).transpose(1, 2)  # [T, p * p, 3], row-major
        features = F.pad(codes, (0, hidden - 3, 1, 0))  # a zero CLS token in front
        return BaseModelOutputWithPooling(last_hidden_state=features)

    monkeypatch.setattr(find_module(model, "vision_tower"), "forward", tower)
    monkeypatch.setattr(
        find_module(model, "multi_modal_projector"),
        "forward",
        lambda x: F.pad(x.view(*x.shape[:2], 4, hidden).mean(2), (0, text_hidden - hidden)),
    )


@pytest.mark.parametrize("size", list(CANVASES))
def test_grid_is_the_tiles_arranged_as_the_image(adapter, planted, size):
    width, height = size
    cols, rows = CANVASES[size]
    assert adapter.tiles(width, height) == (cols, rows)
    a = adapter.tokens_per_side
    enc = adapter.encode_existence(patch_coded_image(width, height), "cat")
    h, w = enc.grid_hw
    assert (h, w) == (rows * a, cols * a)
    image_positions = (enc.input_ids == adapter.image_token_id).nonzero().flatten()
    views = cols * rows + (cols * rows > 1)
    assert image_positions.numel() == views * a * a
    # the map is every tile token; only the thumbnail's block (last, when there are tiles) is left out
    assert set(enc.visual_positions.tolist()) == set(image_positions[: cols * rows * a * a].tolist())
    x = lm_inputs(adapter, adapter.collate([enc]))[0, enc.visual_positions]
    # a token's code is the mean of its 2 x 2 canvas patches: (2r + 0.5, 2c + 0.5)
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    torch.testing.assert_close(x[:, 0].view(h, w), (2 * r + 0.5).float(), atol=0.05, rtol=0)
    torch.testing.assert_close(x[:, 1].view(h, w), (2 * c + 0.5).float(), atol=0.05, rtol=0)
    # cell (r, c) spans pixels [16c, 16c + 16) x [16r, 16r + 16) of the canvas = the image here
    cells = torch.stack([c, r, c + 1, r + 1], -1).view(-1, 4).float()
    torch.testing.assert_close(adapter.cells_to_pixels(cells, enc.geometry), cells * 2 * PATCH)


@pytest.mark.parametrize("size", [(300, 200), (90, 400), (1000, 80), (80, 1000), (40, 30), (500, 480)])
def test_stretched_grid_and_round_trip(adapter, size):
    width, height = size
    enc = adapter.encode_existence(noise(width, height), "cat")
    cols, rows = adapter.tiles(width, height)
    a = adapter.tokens_per_side
    assert enc.grid_hw == (rows * a, cols * a) and cols * rows <= adapter.max_patches
    views = cols * rows + (cols * rows > 1)
    assert int((enc.input_ids == adapter.image_token_id).sum()) == views * a * a
    pixels = torch.tensor([[3.0, 7.0, width * 0.5, height * 0.9], [0.0, 0.0, width, height]])
    cells = pixels_to_cells(pixels, enc.geometry)
    torch.testing.assert_close(adapter.cells_to_pixels(cells, enc.geometry), pixels)
    torch.testing.assert_close(adapter.cells_to_pixels(cells / 2, enc.geometry, downsample=2), pixels)
    torch.testing.assert_close(cells[1], torch.tensor([0.0, 0.0, cols * a, rows * a], dtype=torch.float32))
    assert bool(enc.valid_cells.all())


def test_wide_and_tall_follow_the_aspect(adapter):
    assert adapter.tiles(1000, 80) == (6, 1) and adapter.tiles(80, 1000) == (1, 6)
    # the canvas follows the aspect ratio, not the size: a tiny 3:2 image is upscaled onto 3 x 2 tiles
    assert adapter.tiles(30, 20) == (3, 2) and adapter.tiles(20, 20) == (1, 1)


def test_max_patches_passes_through(tiny_internvl):
    small = adapter_for(*tiny_internvl, max_patches=2)
    enc = small.encode_existence(noise(600, 400), "cat")
    assert small.tiles(600, 400) == (2, 1) and enc.grid_hw == (4, 8)
    assert enc.model_inputs["pixel_values"].shape[0] == 3


def test_registry_and_preset(adapter):
    assert type(adapter) is InternVLAdapter
    assert FocusConfig.preset("internvl").layers == (14, 28)
    config = adapter.default_config()
    assert config.layers == (2, 4)  # the last 50 % of the tiny model's 4 layers
    assert config.smooth_sigma == FocusConfig.preset("llava-onevision").smooth_sigma and config.downsample == 2


def test_target_positions_decode_to_the_target(tiny_internvl, adapter):
    enc = adapter.encode_existence(noise(120, 90), "red car")
    assert tiny_internvl[1].tokenizer.decode(enc.input_ids[enc.target_positions]).replace(" ", "") == "redcar"
    assert enc.target_positions.min() > enc.visual_positions.max()


def test_multi_image_final_prompt_token_counts(tiny_internvl, adapter):
    image = noise(260, 180, seed=3)
    boxes = [(20.0, 30.0, 90.0, 100.0), (150.0, 60.0, 240.0, 170.0)]
    view = adapter.final_view(image, Selection(1, [[boxes[0]], [boxes[1]]]), adapter.default_config())
    enc = adapter.encode_answer(view, "What is the color of the car?", ["red", "blue"])
    a, vocab = adapter.tokens_per_side, tiny_internvl[1].tokenizer.get_vocab()
    # each image: <img>, its tiles' and thumbnail's tokens, </img>
    views = [c * r + (c * r > 1) for c, r in (adapter.tiles(*v.size) for v in view.images)]
    assert enc.model_inputs["pixel_values"].shape[0] == sum(views)
    assert int((enc.input_ids == adapter.image_token_id).sum()) == sum(views) * a * a
    assert int((enc.input_ids == vocab["<img>"]).sum()) == int((enc.input_ids == vocab["</img>"]).sum()) == 3
    answers = adapter.generate(adapter.collate([enc]), max_new_tokens=2)
    assert len(answers) == 1 and isinstance(answers[0], str)
