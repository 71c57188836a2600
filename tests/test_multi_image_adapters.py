"""LLaVA-OneVision and Qwen2.5-VL adapters on tiny random models (CPU, offline).

The grid tests plant features that encode where they come from, run the model's own forward,
read the language model's input embeddings back at the adapter's positions, and check that
they are the local / merged visual features in row-major order, and that the adapter's
cell->pixel geometry points at the same place of the image as the token does.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from focus_modules.adapters import LlavaOnevisionAdapter, Qwen2_5_VLAdapter, Selection, adapter_for
from focus_modules.adapters.multi_image import multi_image_preamble
from focus_modules.config import FocusConfig
from focus_modules.ops.boxes import pixels_to_cells


def noise(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def find_module(model, suffix):
    return next(m for name, m in model.named_modules() if name.endswith(suffix))


def lm_inputs(adapter, batch):
    """The language model's input embeddings ``[B, N, D]`` for ``batch`` (what the first
    decoder layer receives)."""
    seen = {}

    def hook(module, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handle = adapter.decoder_layers()[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.model(**batch.inputs, use_cache=False)
    finally:
        handle.remove()
    return seen["x"]


# --- LLaVA-OneVision ----------------------------------------------------------------------------

# (width, height): square, landscape, portrait, large (bilinear shrink), very wide, very tall,
# smaller than a tile, and one between pinpoints.
OV_SIZES = [(100, 100), (170, 100), (90, 160), (600, 560), (800, 60), (50, 700), (30, 20), (250, 130)]
# more local cells than 1.1^2 x 9 tiles' worth: (600, 560) 34 x 36 -> 17 x 18; (250, 130) 18 x 34 -> 13 x 24
OV_SHRUNK = {(600, 560), (250, 130)}
BASE, NEWLINE, ROW, COL = 0, 1, 2, 3  # channels of the planted features


@pytest.fixture(scope="module")
def ov_adapter(tiny_onevision):
    return adapter_for(*tiny_onevision)


@pytest.fixture
def planted_onevision(tiny_onevision, ov_adapter, monkeypatch):
    """Projector output = (is base, 0, global row, global column) of every tile token on the
    pinpoint canvas; the newline embedding = (0, 1, 0, 0)."""
    model, _ = tiny_onevision
    a = ov_adapter.tokens_per_side
    state = {}

    def projector(features):
        tiles, tokens, _ = features.shape
        hidden = model.config.text_config.hidden_size
        out = torch.zeros(tiles, tokens, hidden)
        i, j = torch.arange(tokens) // a, torch.arange(tokens) % a
        out[0, :, BASE] = 1
        for t in range(1, tiles):
            tile_row, tile_col = divmod(t - 1, state["tiles_w"])
            out[t, :, ROW] = (tile_row * a + i).float()
            out[t, :, COL] = (tile_col * a + j).float()
        return out

    monkeypatch.setattr(find_module(model, "multi_modal_projector"), "forward", projector)
    newline = torch.zeros(model.config.text_config.hidden_size)
    newline[NEWLINE] = 1
    owner = next(m for m in model.modules() if isinstance(getattr(m, "image_newline", None), torch.nn.Parameter))
    original = owner.image_newline.data.clone()
    owner.image_newline.data.copy_(newline)  # in place: monkeypatch cannot restore a Parameter
    yield state
    owner.image_newline.data.copy_(original)


@pytest.mark.parametrize("size", OV_SIZES)
def test_onevision_local_grid_is_the_packed_local_block(ov_adapter, planted_onevision, size):
    from transformers.image_processing_utils import select_best_resolution
    from transformers.image_utils import ChannelDimension

    try:
        from transformers.image_processing_utils import get_patch_output_size
    except ImportError:  # transformers < 5: the same function, private to the OneVision processor
        from transformers.models.llava_onevision.image_processing_llava_onevision import (
            _get_patch_output_size as get_patch_output_size,
        )

    width, height = size
    a, tile = ov_adapter.tokens_per_side, ov_adapter.tile_size
    best_h, best_w = select_best_resolution((height, width), ov_adapter.pinpoints)
    planted_onevision["tiles_w"] = best_w // tile
    enc = ov_adapter.encode_existence(noise(width, height), "cat")
    x = lm_inputs(ov_adapter, ov_adapter.collate([enc]))[0]
    h, w = enc.grid_hw
    image_positions = (enc.input_ids == ov_adapter.image_token_id).nonzero().flatten()
    assert image_positions.numel() == a * a + h * (w + 1)
    local = set(enc.visual_positions.tolist())
    assert len(local) == h * w and local <= set(image_positions.tolist())
    # the base (global-view) tokens come first and are not in the map
    assert torch.all(x[image_positions[: a * a], BASE] == 1)
    # every other image token is either in the map or a newline token
    rest = [p for p in image_positions[a * a :].tolist() if p not in local]
    assert len(rest) == h and torch.all(x[rest, NEWLINE] == 1)
    assert torch.all(x[enc.visual_positions][:, [BASE, NEWLINE]] == 0)
    # row-major: rows constant along a row and increasing down; columns the other way
    rows = x[enc.visual_positions, ROW].view(h, w).double()
    cols = x[enc.visual_positions, COL].view(h, w).double()
    torch.testing.assert_close(rows, rows[:, :1].expand(h, w), rtol=0, atol=1e-4)
    torch.testing.assert_close(cols, cols[:1, :].expand(h, w), rtol=0, atol=1e-4)
    assert torch.all(rows[1:, 0] > rows[:-1, 0]) and torch.all(cols[0, 1:] > cols[0, :-1])
    steps = torch.cat([rows[1:, 0] - rows[:-1, 0], cols[0, 1:] - cols[0, :-1]])
    if size in OV_SHRUNK:  # the bilinear shrink samples the local map more sparsely
        assert torch.all(steps > 1.2)
    else:  # whole cells, one step apart
        assert torch.all(steps == 1)
    # the unpadding is symmetric on the padded canvas (the shrink keeps the centre)
    canvas_rows, canvas_cols = best_h // tile * a, best_w // tile * a
    assert float(rows[0, 0] + rows[-1, 0]) == pytest.approx(canvas_rows - 1, abs=1e-4)
    assert float(cols[0, 0] + cols[0, -1]) == pytest.approx(canvas_cols - 1, abs=1e-4)
    # the geometry's cell centres are where those tokens sit in the original image: canvas cell
    # centre -> undo the processor's paste offset and resize
    image = torch.zeros(height, width, 3).numpy()
    new_h, new_w = get_patch_output_size(image, (best_h, best_w), ChannelDimension.LAST)
    paste = torch.tensor([(best_w - new_w) // 2, (best_h - new_h) // 2], dtype=torch.float64)
    canvas_xy = torch.stack([cols, rows], -1) + 0.5
    expected = (canvas_xy * tile / a - paste) * torch.tensor([width / new_w, height / new_h], dtype=torch.float64)
    grid_xy = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy"), -1).double() + 0.5
    centres = enc.geometry.origin + grid_xy * enc.geometry.cell_size
    torch.testing.assert_close(centres, expected, rtol=0, atol=1e-3)


def test_onevision_sizes_cover_shrink_wide_and_tall(ov_adapter):
    grids = {size: ov_adapter.encode_existence(noise(*size), "cat").grid_hw for size in [(800, 60), (50, 700)]}
    (h, w), (h2, w2) = grids[(800, 60)], grids[(50, 700)]
    assert w >= 4 * h and h2 >= 4 * w2


@pytest.mark.parametrize("size", [(170, 100), (90, 160), (600, 560), (800, 60)])
def test_onevision_cell_pixel_round_trip(ov_adapter, size):
    enc = ov_adapter.encode_existence(noise(*size), "cat")
    width, height = size
    pixels = torch.tensor([[10.0, 5.0, width * 0.6, height * 0.7], [0.0, 0.0, width, height]])
    cells = pixels_to_cells(pixels, enc.geometry)
    torch.testing.assert_close(ov_adapter.cells_to_pixels(cells, enc.geometry), pixels)
    torch.testing.assert_close(ov_adapter.cells_to_pixels(cells / 2, enc.geometry, downsample=2), pixels)
    # the whole map covers the image up to the unpadding's rounding (less than a cell)
    h, w = enc.grid_hw
    full = ov_adapter.cells_to_pixels(torch.tensor([[0.0, 0.0, w, h]]), enc.geometry)[0]
    cell_w, cell_h = enc.geometry.cell_size.tolist()
    assert full[0] <= cell_w and full[1] <= cell_h and full[2] >= width - cell_w and full[3] >= height - cell_h
    assert bool(enc.valid_cells.all()) or int((~enc.valid_cells).sum()) <= max(h, w) * 2


# --- Qwen2.5-VL ---------------------------------------------------------------------------------

# sizes that are already multiples of 28 inside the pixel limits, so the view is the image
QWEN_SIZES = [(224, 224), (336, 140), (112, 392), (252, 196), (56, 56)]
STEP = 8  # pixel value step per 14-px patch of the planted image


def patch_coded_image(width, height):
    """Each 14 x 14 patch is flat: red = STEP * patch row, green = STEP * patch column."""
    rows = np.repeat(np.arange(height // 14), 14)[:, None].repeat(width, 1)
    cols = np.repeat(np.arange(width // 14), 14)[None, :].repeat(height, 0)
    return Image.fromarray(np.stack([rows * STEP, cols * STEP, np.zeros_like(rows)], -1).astype(np.uint8))


@pytest.fixture
def qwen_adapter(tiny_qwen2_5_vl):
    return adapter_for(*tiny_qwen2_5_vl, max_pixels=28 * 28 * 80)


@pytest.fixture
def planted_qwen(tiny_qwen2_5_vl, qwen_adapter, monkeypatch):
    """Vision tower reduced to: patch embedding = the patch's mean colour (denormalised),
    identity blocks, merger = mean over each 2 x 2 group; the window reordering stays the model's."""
    model, processor = tiny_qwen2_5_vl
    mean = torch.tensor(processor.image_processor.image_mean)
    std = torch.tensor(processor.image_processor.image_std)
    visual = find_module(model, "visual")
    hidden = model.config.vision_config.hidden_size
    out_hidden = model.config.vision_config.out_hidden_size

    def patch_embed(pixels):
        colour = pixels.view(pixels.shape[0], 3, -1).mean(-1) * std + mean  # [N, 3] in [0, 1]
        return F.pad(colour * 255 / STEP, (0, hidden - 3))

    monkeypatch.setattr(visual.patch_embed, "forward", patch_embed)
    for block in visual.blocks:
        monkeypatch.setattr(block, "forward", lambda hidden_states, *args, **kwargs: hidden_states)
    monkeypatch.setattr(
        visual.merger, "forward", lambda x: F.pad(x.view(-1, 4, hidden).mean(1), (0, out_hidden - hidden))
    )


@pytest.mark.parametrize("size", QWEN_SIZES)
def test_qwen_grid_is_the_merged_image_block(qwen_adapter, planted_qwen, size):
    width, height = size
    enc = qwen_adapter.encode_existence(patch_coded_image(width, height), "cat")
    h, w = enc.grid_hw
    assert (h, w) == (height // 28, width // 28)
    image_positions = (enc.input_ids == qwen_adapter.image_token_id).nonzero().flatten()
    assert torch.equal(enc.visual_positions, image_positions)
    x = lm_inputs(qwen_adapter, qwen_adapter.collate([enc]))[0, enc.visual_positions]
    # a merged token's code is the mean of its 2 x 2 patches: (2r + 0.5, 2c + 0.5)
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    torch.testing.assert_close(x[:, 0].view(h, w), (2 * r + 0.5).float(), atol=0.05, rtol=0)
    torch.testing.assert_close(x[:, 1].view(h, w), (2 * c + 0.5).float(), atol=0.05, rtol=0)
    # cell (r, c) spans pixels [28c, 28c + 28) x [28r, 28r + 28) of the view = the image here
    cells = torch.stack([c, r, c + 1, r + 1], -1).view(-1, 4).float()
    torch.testing.assert_close(qwen_adapter.cells_to_pixels(cells, enc.geometry), cells * 28)


@pytest.mark.parametrize("size", [(300, 200), (90, 400), (1000, 80), (40, 30)])
def test_qwen_resized_grid_and_round_trip(qwen_adapter, size):
    enc = qwen_adapter.encode_existence(noise(*size), "cat")
    width, height = size
    new_w, new_h = qwen_adapter.resized_size(width, height)
    assert enc.grid_hw == (new_h // 28, new_w // 28)
    assert new_w * new_h <= qwen_adapter.max_pixels
    assert (enc.input_ids == qwen_adapter.image_token_id).sum() == enc.grid_hw[0] * enc.grid_hw[1]
    pixels = torch.tensor([[3.0, 7.0, width * 0.5, height * 0.9], [0.0, 0.0, width, height]])
    cells = pixels_to_cells(pixels, enc.geometry)
    torch.testing.assert_close(qwen_adapter.cells_to_pixels(cells, enc.geometry), pixels)
    h, w = enc.grid_hw
    torch.testing.assert_close(cells[1], torch.tensor([0.0, 0.0, w, h]))
    assert bool(enc.valid_cells.all())


def test_qwen_max_pixels_passes_through(tiny_qwen2_5_vl):
    small = adapter_for(*tiny_qwen2_5_vl, max_pixels=28 * 28 * 16)
    large = Qwen2_5_VLAdapter(*tiny_qwen2_5_vl, max_pixels=28 * 28 * 200)
    image = noise(600, 400)
    hs, ws = small.encode_existence(image, "cat").grid_hw
    hl, wl = large.encode_existence(image, "cat").grid_hw
    assert hs * ws <= 16 < hl * wl <= 200
    assert small.max_pixels == 28 * 28 * 16
    default = adapter_for(*tiny_qwen2_5_vl)
    assert default.max_pixels == tiny_qwen2_5_vl[1].image_processor.size["longest_edge"]


# --- both families --------------------------------------------------------------------------------


@pytest.fixture(params=["onevision", "qwen"])
def family(request, tiny_onevision, tiny_qwen2_5_vl):
    model, processor = tiny_onevision if request.param == "onevision" else tiny_qwen2_5_vl
    return model, processor, adapter_for(model, processor)


def test_registry_and_presets(family):
    model, _, adapter = family
    expected = LlavaOnevisionAdapter if "Onevision" in type(model).__name__ else Qwen2_5_VLAdapter
    assert type(adapter) is expected
    assert FocusConfig.preset("llava-onevision").layers == (21, 28)
    assert FocusConfig.preset("qwen2.5-vl").layers == (14, 28)
    config = adapter.default_config()
    assert config.smooth_sigma is not None and config.downsample > 1
    # the tiny models are 4 layers deep: the presets' share of last layers (50 % / 25 %)
    assert config.layers == ((2, 4) if expected is Qwen2_5_VLAdapter else (3, 4))
    assert type(adapter).preset_depth == 28


def test_target_positions_decode_to_the_target(family):
    _, processor, adapter = family
    enc = adapter.encode_existence(noise(120, 90), "red car")
    assert processor.tokenizer.decode(enc.input_ids[enc.target_positions]).replace(" ", "") == "redcar"
    assert enc.target_positions.min() > enc.visual_positions.max()


def test_multi_image_final_prompt_builds_and_runs(family):
    model, processor, adapter = family
    image = noise(260, 180, seed=3)
    boxes = [(20.0, 30.0, 90.0, 100.0), (150.0, 60.0, 240.0, 170.0)]
    view = adapter.final_view(image, Selection(1, [[boxes[0]], [boxes[1]]]), adapter.default_config())
    assert view.kind == "multi-image" and len(view.images) == 3 and view.boxes == boxes
    assert view.images[1].size == (70, 70) and view.images[2].size == (90, 110)
    outlined = np.asarray(view.images[0])
    assert tuple(outlined[30, 50]) == (255, 0, 0) and tuple(outlined[100 - 1, 50]) == (255, 0, 0)
    assert np.array_equal(outlined[60, 50], np.asarray(image)[60, 50])  # inside the box: untouched
    question, options = "What is the color of the car?", ["red", "blue"]
    enc = adapter.encode_answer(view, question, options)
    text = processor.tokenizer.decode(enc.input_ids)
    image_tokens = int((enc.input_ids == adapter.image_token_id).sum())
    if isinstance(adapter, Qwen2_5_VLAdapter):
        assert image_tokens == int(enc.model_inputs["image_grid_thw"].prod(-1).sum()) // 4
    else:  # the model's multi-image mode: one global view (a x a tokens + newline) per image
        assert enc.model_inputs["batch_num_images"].tolist() == [3]
        assert image_tokens == 3 * (adapter.tokens_per_side**2 + 1)
    assert multi_image_preamble(2).split(";")[0].replace(" ", "") in text.replace(" ", "")
    # one image block per image; the batch also holds a single-image prompt
    single = adapter.encode_answer(
        adapter.final_view(image, Selection(1, [[]]), adapter.default_config()), question, None
    )
    answers = adapter.generate(adapter.collate([enc, single]), max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # type 2: overlapping ROIs are merged before the crops
    view2 = adapter.final_view(
        image, Selection(2, [[(0.0, 0.0, 50.0, 50.0), (40.0, 40.0, 80.0, 80.0)]]), adapter.default_config()
    )
    assert len(view2.images) == 2 and view2.boxes == [(0.0, 0.0, 80.0, 80.0)]
