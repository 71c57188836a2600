"""Qwen3-VL adapter on a tiny random model (CPU, offline).

The grid test plants features that encode which 16-px patches they come from, runs the model's
own forward, and reads the language model's input (and the deepstack features added after the
first decoder layer) back at the adapter's positions.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_multi_image_adapters import find_module, lm_inputs, noise

from focus_modules.adapters import Qwen3VLAdapter, Selection, adapter_for
from focus_modules.config import FocusConfig
from focus_modules.ops.boxes import pixels_to_cells

PATCH, CELL = 16, 32  # pixels per patch and per merged token
# multiples of 32 inside the pixel limits, so the view is the image: square, landscape, portrait,
# wide, and the 2 x 2 minimum
SIZES = [(256, 256), (384, 160), (128, 448), (320, 224), (64, 64)]
STEP = 8  # pixel value step per patch of the planted image
DEEPSTACK_OFFSET = 100.0  # the planted deepstack features are the codes shifted by this


def patch_coded_image(width, height):
    """Each 16 x 16 patch is flat: red = STEP * patch row, green = STEP * patch column."""
    rows = np.repeat(np.arange(height // PATCH), PATCH)[:, None].repeat(width, 1)
    cols = np.repeat(np.arange(width // PATCH), PATCH)[None, :].repeat(height, 0)
    return Image.fromarray(np.stack([rows * STEP, cols * STEP, np.zeros_like(rows)], -1).astype(np.uint8))


@pytest.fixture
def adapter(tiny_qwen3_vl):
    return adapter_for(*tiny_qwen3_vl, max_pixels=CELL * CELL * 80)


@pytest.fixture
def planted(tiny_qwen3_vl, adapter, monkeypatch):
    """Vision tower reduced to: patch embedding = the patch's (row, column) code, no position
    embedding, identity blocks, merger (and deepstack mergers, shifted) = mean over each group of
    4 patches as the model groups them."""
    model, processor = tiny_qwen3_vl
    mean = torch.tensor(processor.image_processor.image_mean)
    std = torch.tensor(processor.image_processor.image_std)
    visual = find_module(model, "visual")
    hidden = model.config.vision_config.hidden_size
    out_hidden = model.config.vision_config.out_hidden_size

    def patch_embed(pixels):
        colour = pixels.view(pixels.shape[0], 3, -1).mean(-1) * std + mean  # [N, 3] in [0, 1]
        return F.pad(colour * 255 / STEP, (0, hidden - 3))

    def merger(shift):
        return lambda x: F.pad(x.reshape(-1, 4, hidden).mean(1) + shift, (0, out_hidden - hidden))

    monkeypatch.setattr(visual.patch_embed, "forward", patch_embed)
    monkeypatch.setattr(visual.pos_embed, "forward", lambda ids: torch.zeros(*ids.shape, hidden))
    for block in visual.blocks:
        monkeypatch.setattr(block, "forward", lambda hidden_states, *args, **kwargs: hidden_states)
    monkeypatch.setattr(visual.merger, "forward", merger(0.0))
    for deepstack in visual.deepstack_merger_list:
        monkeypatch.setattr(deepstack, "forward", merger(DEEPSTACK_OFFSET))


def deepstack_added(adapter, batch):
    """What the model adds to the hidden states between decoder layers 0 and 1, ``[B, N, D]``."""
    seen = {}

    def after_first(module, args, output):
        seen["out"] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    def before_second(module, args, kwargs):
        seen["in"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    layers = adapter.decoder_layers()
    handles = [
        layers[0].register_forward_hook(after_first),
        layers[1].register_forward_pre_hook(before_second, with_kwargs=True),
    ]
    try:
        with torch.no_grad():
            adapter.model(**batch.inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen["in"] - seen["out"]


@pytest.mark.parametrize("size", SIZES)
def test_grid_is_the_merged_image_block_and_deepstack_follows_it(adapter, planted, size):
    width, height = size
    enc = adapter.encode_existence(patch_coded_image(width, height), "cat")
    h, w = enc.grid_hw
    assert (h, w) == (height // CELL, width // CELL)
    image_positions = (enc.input_ids == adapter.image_token_id).nonzero().flatten()
    assert torch.equal(enc.visual_positions, image_positions)
    batch = adapter.collate([enc])
    x = lm_inputs(adapter, batch)[0, enc.visual_positions]
    # a merged token's code is the mean of its 2 x 2 patches: (2r + 0.5, 2c + 0.5)
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    torch.testing.assert_close(x[:, 0].view(h, w), (2 * r + 0.5).float(), atol=0.05, rtol=0)
    torch.testing.assert_close(x[:, 1].view(h, w), (2 * c + 0.5).float(), atol=0.05, rtol=0)
    # deepstack adds the same grid, in the same order, at the same positions and nowhere else
    added = deepstack_added(adapter, batch)[0]
    torch.testing.assert_close(
        added[enc.visual_positions, 0].view(h, w), (2 * r + 0.5).float() + DEEPSTACK_OFFSET, atol=0.05, rtol=0
    )
    torch.testing.assert_close(
        added[enc.visual_positions, 1].view(h, w), (2 * c + 0.5).float() + DEEPSTACK_OFFSET, atol=0.05, rtol=0
    )
    others = torch.ones(enc.input_ids.numel(), dtype=torch.bool)
    others[enc.visual_positions] = False
    assert torch.all(added[others] == 0)
    # cell (r, c) spans pixels [32c, 32c + 32) x [32r, 32r + 32) of the view = the image here
    cells = torch.stack([c, r, c + 1, r + 1], -1).view(-1, 4).float()
    torch.testing.assert_close(adapter.cells_to_pixels(cells, enc.geometry), cells * CELL)


@pytest.mark.parametrize("size", [(300, 200), (90, 400), (1000, 80), (80, 1000), (40, 30)])
def test_resized_grid_and_round_trip(adapter, size):
    enc = adapter.encode_existence(noise(*size), "cat")
    width, height = size
    new_w, new_h = adapter.resized_size(width, height)
    assert enc.grid_hw == (new_h // CELL, new_w // CELL)
    assert new_w * new_h <= adapter.max_pixels
    assert (enc.input_ids == adapter.image_token_id).sum() == enc.grid_hw[0] * enc.grid_hw[1]
    pixels = torch.tensor([[3.0, 7.0, width * 0.5, height * 0.9], [0.0, 0.0, width, height]])
    cells = pixels_to_cells(pixels, enc.geometry)
    torch.testing.assert_close(adapter.cells_to_pixels(cells, enc.geometry), pixels)
    torch.testing.assert_close(adapter.cells_to_pixels(cells / 2, enc.geometry, downsample=2), pixels)
    h, w = enc.grid_hw
    torch.testing.assert_close(cells[1], torch.tensor([0.0, 0.0, w, h]))
    assert bool(enc.valid_cells.all())


def test_wide_and_tall_keep_their_aspect(adapter):
    (h, w) = adapter.encode_existence(noise(1000, 80), "cat").grid_hw
    (h2, w2) = adapter.encode_existence(noise(80, 1000), "cat").grid_hw
    assert w >= 4 * h and h2 >= 4 * w2


def test_registry_and_preset(tiny_qwen3_vl, adapter):
    assert type(adapter) is Qwen3VLAdapter and adapter.factor == CELL
    assert FocusConfig.preset("qwen3-vl").layers == (18, 36)
    config = adapter.default_config()
    assert config.layers == (2, 4)  # the last 50 % of the tiny model's 4 layers
    assert config.smooth_sigma == FocusConfig.preset("qwen2.5-vl").smooth_sigma and config.downsample == 2


def test_target_positions_decode_to_the_target(tiny_qwen3_vl, adapter):
    enc = adapter.encode_existence(noise(120, 90), "red car")
    assert tiny_qwen3_vl[1].tokenizer.decode(enc.input_ids[enc.target_positions]).replace(" ", "") == "redcar"
    assert enc.target_positions.min() > enc.visual_positions.max()


def test_multi_image_final_prompt_token_counts(tiny_qwen3_vl, adapter):
    image = noise(260, 180, seed=3)
    boxes = [(20.0, 30.0, 90.0, 100.0), (150.0, 60.0, 240.0, 170.0)]
    view = adapter.final_view(image, Selection(1, [[boxes[0]], [boxes[1]]]), adapter.default_config())
    enc = adapter.encode_answer(view, "What is the color of the car?", ["red", "blue"])
    thw = enc.model_inputs["image_grid_thw"]
    assert thw.shape == (3, 3)
    # one <|vision_start|> block per image, each with its own merged grid of tokens
    for image_view, (t, gh, gw) in zip(view.images, thw.tolist()):
        new_w, new_h = adapter.resized_size(*image_view.size)
        assert (t, gh, gw) == (1, new_h // PATCH, new_w // PATCH)
    image_tokens = int((enc.input_ids == adapter.image_token_id).sum())
    assert image_tokens == int(thw.prod(-1).sum()) // 4
    assert int((enc.input_ids == tiny_qwen3_vl[0].config.vision_start_token_id).sum()) == 3
    answers = adapter.generate(adapter.collate([enc]), max_new_tokens=2)
    assert len(answers) == 1 and isinstance(answers[0], str)
