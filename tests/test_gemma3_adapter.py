"""Gemma 3 adapter on a tiny random model (CPU, offline).

The grid test feeds images whose red channel ramps with x and green with y, reduces the vision
tower to reading each patch's mean colour, runs the model's own projector (average pooling to
8 x 8 tokens) and reads the language model's input back at the adapter's positions: each token
must carry the image fraction of its cell's centre, for every size and aspect ratio, since the
processor stretches the whole image onto the tower's square.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_multi_image_adapters import find_module, lm_inputs, noise
from transformers.modeling_outputs import BaseModelOutputWithPooling

from focus_modules.adapters import Gemma3Adapter, Selection, adapter_for
from focus_modules.config import FocusConfig
from focus_modules.ops.boxes import pixels_to_cells

PATCH = 8  # pixels per patch of the tiny tower (128-px view -> 16 x 16 patches -> 8 x 8 tokens)
# square (the view itself), landscape, portrait, very wide, very tall, tiny
SIZES = [(128, 128), (300, 200), (90, 400), (1000, 80), (80, 1000), (40, 30)]
# Two uint8 steps on the image fraction: the ramp's rounding plus the resampler's.
RAMP_TOLERANCE = 2 / 255


def ramp_image(width, height):
    """Red = x fraction and green = y fraction of each pixel centre, in 0..255."""
    x = np.round(255 * (np.arange(width) + 0.5) / width)[None, :].repeat(height, 0)
    y = np.round(255 * (np.arange(height) + 0.5) / height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


@pytest.fixture(scope="module")
def adapter(tiny_gemma3):
    return adapter_for(*tiny_gemma3)


@pytest.fixture
def planted(tiny_gemma3, monkeypatch):
    """Vision tower = each patch's mean colour in [0, 1] (denormalised); the model's projector
    keeps its pooling, with its norm made the identity and its projection a copy of the channels."""
    model, processor = tiny_gemma3
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    hidden = model.config.vision_config.hidden_size

    def tower(pixel_values, **kwargs):
        colour = F.avg_pool2d(pixel_values * std + mean, PATCH)  # [V, 3, p, p]
        return BaseModelOutputWithPooling(last_hidden_state=F.pad(colour.flatten(2).transpose(1, 2), (0, hidden - 3)))

    projector = find_module(model, "multi_modal_projector")
    monkeypatch.setattr(find_module(model, "vision_tower"), "forward", tower)
    monkeypatch.setattr(projector.mm_soft_emb_norm, "forward", lambda x: x)
    weight = projector.mm_input_projection_weight
    original = weight.data.clone()
    weight.data.copy_(torch.eye(*weight.shape))  # in place: monkeypatch cannot restore a Parameter
    yield
    weight.data.copy_(original)


def cell_centres(enc):
    """``[h, w, 2]`` (x, y) pixel centres of the map's cells."""
    h, w = enc.grid_hw
    grid = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy"), -1).double() + 0.5
    return enc.geometry.origin + grid * enc.geometry.cell_size


@pytest.mark.parametrize("size", SIZES)
def test_grid_is_the_global_view_and_cells_point_at_their_tokens(adapter, planted, size):
    width, height = size
    enc = adapter.encode_existence(ramp_image(width, height), "cat")
    a = adapter.tokens_per_side
    assert enc.grid_hw == (a, a)
    image_positions = (enc.input_ids == adapter.image_token_id).nonzero().flatten()
    assert torch.equal(enc.visual_positions, image_positions)  # no pan-and-scan: one view
    x = lm_inputs(adapter, adapter.collate([enc]))[0, enc.visual_positions].view(a, a, -1)
    fraction = cell_centres(enc) / torch.tensor([width, height], dtype=torch.float64)
    torch.testing.assert_close(x[..., :2].double(), fraction, atol=RAMP_TOLERANCE, rtol=0)


def test_pan_and_scan_crops_stay_out_of_the_map(tiny_gemma3, planted):
    adapter = adapter_for(*tiny_gemma3, pan_and_scan=True)
    width, height = 1200, 300  # 4:1: four 300 x 300 crops (the processor's minimum crop is 256 px)
    enc = adapter.encode_existence(ramp_image(width, height), "cat")
    a = adapter.tokens_per_side
    image_positions = (enc.input_ids == adapter.image_token_id).nonzero().flatten()
    assert enc.model_inputs["pixel_values"].shape[0] == 5 and image_positions.numel() == 5 * a * a
    assert torch.equal(enc.visual_positions, image_positions[: a * a])  # the global view comes first
    x = lm_inputs(adapter, adapter.collate([enc]))[0]
    fraction = cell_centres(enc) / torch.tensor([width, height], dtype=torch.float64)
    torch.testing.assert_close(
        x[enc.visual_positions, :2].view(a, a, 2).double(), fraction, atol=RAMP_TOLERANCE, rtol=0
    )
    # each crop's block spans a quarter of the width
    for k in range(4):
        crop = x[image_positions[(k + 1) * a * a : (k + 2) * a * a], 0]
        assert k / 4 - RAMP_TOLERANCE <= float(crop.min()) and float(crop.max()) <= (k + 1) / 4 + RAMP_TOLERANCE
    assert (
        adapter_for(*tiny_gemma3).encode_existence(ramp_image(width, height), "cat").input_ids.numel()
        < enc.input_ids.numel()
    )  # off by default, as the released processors


@pytest.mark.parametrize("size", SIZES)
def test_cell_pixel_round_trip(adapter, size):
    width, height = size
    enc = adapter.encode_existence(noise(width, height), "cat")
    pixels = torch.tensor([[3.0, 7.0, width * 0.5, height * 0.9], [0.0, 0.0, width, height]])
    cells = pixels_to_cells(pixels, enc.geometry)
    torch.testing.assert_close(adapter.cells_to_pixels(cells, enc.geometry), pixels)
    torch.testing.assert_close(adapter.cells_to_pixels(cells / 2, enc.geometry, downsample=2), pixels)
    a = adapter.tokens_per_side
    torch.testing.assert_close(cells[1], torch.tensor([0.0, 0.0, a, a]))
    assert bool(enc.valid_cells.all())


def test_registry_and_preset(adapter):
    assert type(adapter) is Gemma3Adapter
    assert FocusConfig.preset("gemma3").layers == (17, 34)
    config = adapter.default_config()
    assert config.layers == (2, 4)  # the last 50 % of the tiny model's 4 layers
    assert config.smooth_sigma is None and config.downsample == 1  # a global view, as LLaVA-1.5


def test_target_positions_decode_to_the_target(tiny_gemma3, adapter):
    enc = adapter.encode_existence(noise(120, 90), "red car")
    assert tiny_gemma3[1].tokenizer.decode(enc.input_ids[enc.target_positions]).replace(" ", "") == "redcar"
    assert enc.target_positions.min() > enc.visual_positions.max()


def test_multi_image_final_prompt_token_counts(tiny_gemma3, adapter):
    image = noise(260, 180, seed=3)
    boxes = [(20.0, 30.0, 90.0, 100.0), (150.0, 60.0, 240.0, 170.0)]
    view = adapter.final_view(image, Selection(1, [[boxes[0]], [boxes[1]]]), adapter.default_config())
    enc = adapter.encode_answer(view, "What is the color of the car?", ["red", "blue"])
    a, vocab = adapter.tokens_per_side, tiny_gemma3[1].tokenizer.get_vocab()
    assert enc.model_inputs["pixel_values"].shape[0] == 3
    assert int((enc.input_ids == adapter.image_token_id).sum()) == 3 * a * a
    assert int((enc.input_ids == vocab["<start_of_image>"]).sum()) == 3
    assert tuple(enc.token_inputs["token_type_ids"].shape) == tuple(enc.input_ids.shape)
    answers = adapter.generate(adapter.collate([enc]), max_new_tokens=2)
    assert len(answers) == 1 and isinstance(answers[0], str)
