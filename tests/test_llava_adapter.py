import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import build_tiny_llava
from torch import nn

from focus_modules import ModelAdapter, register_adapter
from focus_modules.adapters import LlavaAdapter, adapter_for, supported_models
from focus_modules.adapters.base import OPTIONS_INSTRUCTION
from focus_modules.adapters.views import expand_to_square


@pytest.fixture(scope="module")
def adapter(tiny_llava):
    return adapter_for(*tiny_llava)


def test_registry_picks_llava_and_names_supported_families(tiny_llava):
    model, processor = tiny_llava
    assert type(adapter_for(model, processor)) is LlavaAdapter
    assert supported_models()["LlavaForConditionalGeneration"] == "llava-1.5"
    with pytest.raises(
        ValueError,
        match=r"no FOCUS adapter for Linear; supported model families: .*llava-1.5 \(LlavaForConditionalGeneration\)",
    ):
        adapter_for(nn.Linear(2, 2), processor)


def test_register_adapter_for_a_new_family(tiny_llava, monkeypatch):
    import focus_modules.adapters as adapters

    monkeypatch.setattr(adapters, "_REGISTRY", dict(adapters._REGISTRY))  # undone after the test

    class MyVlm(nn.Module):
        pass

    class MyVlmSubclass(MyVlm):
        pass

    @register_adapter(MyVlm)
    class MyAdapter(LlavaAdapter):
        family = "llava-1.5"

    model, processor = tiny_llava
    assert supported_models()["MyVlm"] == "llava-1.5"
    with pytest.raises(TypeError, match="ModelAdapter subclass"):
        register_adapter("Other", dict)
    # Subclasses of a registered class are served by its adapter.
    sub = MyVlmSubclass()
    sub.config = model.config
    assert type(adapter_for(sub, processor)) is MyAdapter
    assert issubclass(MyAdapter, ModelAdapter)


@pytest.mark.parametrize("strategy, tower", [("default", "clip"), ("full", "clip"), ("full", "siglip")])
def test_visual_positions_are_the_image_token_positions(strategy, tower):
    model, processor = build_tiny_llava(vision_feature_select_strategy=strategy, vision_tower=tower, num_layers=2)
    adapter = adapter_for(model, processor)
    image = Image.new("RGB", (150, 90), (10, 200, 30))
    enc = adapter.encode_existence(image, "red car")
    square, _ = expand_to_square(image, adapter.background_color)
    text = "USER: <image>\nIs there a red car in the image? Answer Yes or No. ASSISTANT:"
    reference = processor(images=[square], text=[text], return_tensors="pt")
    assert torch.equal(enc.input_ids, reference["input_ids"][0])
    torch.testing.assert_close(enc.model_inputs["pixel_values"], reference["pixel_values"])
    image_positions = (reference["input_ids"][0] == adapter.image_token_id).nonzero().flatten()
    # the processor's count: CLIP's CLS stays in front of the grid under "full"; SigLIP has none
    expected = image_positions[1:] if (strategy, tower) == ("full", "clip") else image_positions
    assert enc.grid_hw == (12, 12) and len(expected) == 144
    assert torch.equal(enc.visual_positions, expected)
    # The model accepts the encoding (feature count == image tokens).
    batch = adapter.collate([enc])
    assert adapter.last_logits(batch).shape == (1, len(processor.tokenizer))


@pytest.mark.parametrize("target", ["cat", "red car", "white truck", "woman's umbrella", "all"])
@pytest.mark.parametrize("chat_template", [True, False])
def test_target_positions_decode_back_to_the_target(target, chat_template):
    model, processor = build_tiny_llava(chat_template=chat_template, num_layers=2)
    adapter = adapter_for(model, processor)
    enc = adapter.encode_existence(Image.new("RGB", (40, 70)), target)
    tokens = processor.tokenizer.convert_ids_to_tokens(enc.input_ids[enc.target_positions].tolist())
    assert "".join(tokens) == target.replace(" ", "")
    # Left padding shifts positions by the batch offsets.
    short = adapter.encode_existence(Image.new("RGB", (40, 70)), "cup")
    batch = adapter.collate([short, enc])
    shifted = enc.target_positions + batch.offsets[1]
    assert torch.equal(batch.inputs["input_ids"][1, shifted], enc.input_ids[enc.target_positions])
    assert batch.offsets[0] >= batch.offsets[1] == 0


def unnormalize(pixel_values, image_processor):
    mean = torch.tensor(image_processor.image_mean)[:, None, None]
    std = torch.tensor(image_processor.image_std)[:, None, None]
    return ((pixel_values[0] * std + mean) * 255).permute(1, 2, 0)  # [H, W, 3]


@pytest.mark.parametrize("size", [(96, 48), (48, 96), (96, 96), (192, 120), (70, 200), (300, 300), (13, 7)])
def test_cells_map_to_the_pixels_the_model_sees(adapter, size):
    """Paint every map cell's pixel box (from cells_to_pixels) in its own colour, run the real
    preprocessing, and read each colour back at the same cell of the model's input."""
    a = adapter.grid_size
    width, height = size
    enc = adapter.encode_existence(Image.new("RGB", size), "cat")
    colours = {(i, j): (20 * i + 5, 20 * j + 5, 128) for i in range(a) for j in range(a)}
    cells = torch.tensor([[j, i, j + 1, i + 1] for i in range(a) for j in range(a)], dtype=torch.float32)
    boxes = adapter.cells_to_pixels(cells, enc.geometry).view(a, a, 4)
    canvas = np.zeros((height, width, 3), np.uint8)
    for (i, j), colour in colours.items():
        x1, y1, x2, y2 = boxes[i, j].tolist()
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        canvas[round(y1) : round(y2), round(x1) : round(x2)] = colour
        # a valid cell has its centre in the image; an invalid one in the padding
        centre = enc.geometry.origin + (torch.tensor([j, i]) + 0.5) * enc.geometry.cell_size
        inside = 0 <= centre[0] < width and 0 <= centre[1] < height
        assert bool(enc.valid_cells[i, j]) == inside
    seen = unnormalize(
        adapter.encode_existence(Image.fromarray(canvas), "cat").model_inputs["pixel_values"], adapter.image_processor
    )
    side, (left, top) = max(size), expand_to_square(Image.new("RGB", size), (0, 0, 0))[1]
    scale = adapter.image_size / side
    for (i, j), colour in colours.items():
        x1, y1, x2, y2 = boxes[i, j].tolist()
        if min(x2 - x1, y2 - y1) < 2:  # (almost) all padding, or too thin to survive resampling
            continue
        # centre of the cell's visible part, in the model's input
        px = int(((x1 + x2) / 2 + left) * scale)
        py = int(((y1 + y2) / 2 + top) * scale)
        assert (j * adapter.image_size // a) <= px < ((j + 1) * adapter.image_size // a)
        assert (i * adapter.image_size // a) <= py < ((i + 1) * adapter.image_size // a)
        torch.testing.assert_close(seen[py, px], torch.tensor(colour, dtype=torch.float32), atol=6, rtol=0)
    # cells wholly in the padding show the processor's mean colour
    background = torch.tensor(adapter.background_color, dtype=torch.float32)
    cell_px = adapter.image_size // a
    for i, j in (~enc.valid_cells).nonzero().tolist():
        x1, y1, x2, y2 = boxes[i, j].tolist()
        if x1 == x2 or y1 == y2:
            torch.testing.assert_close(
                seen[i * cell_px + cell_px // 2, j * cell_px + cell_px // 2], background, atol=4, rtol=0
            )


@pytest.mark.parametrize("size", [(320, 200), (200, 320), (250, 250)])
def test_pixel_box_round_trip(adapter, size):
    from focus_modules.ops.boxes import CellGeometry, pixels_to_cells

    enc = adapter.encode_existence(Image.new("RGB", size), "cat")
    a = adapter.grid_size
    # llava-hf's processors keep the whole square: the geometry is the padded square's.
    reference = CellGeometry.padded_square([size], [[a, a]])
    for field, expected in zip(enc.geometry, reference):
        torch.testing.assert_close(field, expected[0])
    side = max(size)
    assert tuple(-enc.geometry.origin) == ((side - size[0]) // 2, (side - size[1]) // 2)
    pixels = torch.tensor([[10.0, 20.0, 180.0, 150.0], [0.0, 0.0, size[0], size[1]]])
    cells = pixels_to_cells(pixels, enc.geometry)
    torch.testing.assert_close(adapter.cells_to_pixels(cells, enc.geometry), pixels)
    # downsampled maps: a cell spans `downsample` map cells
    torch.testing.assert_close(adapter.cells_to_pixels(cells / 2, enc.geometry, downsample=2), pixels)
    rows, cols = enc.valid_cells.any(1), enc.valid_cells.any(0)
    pad = ((side - size[1]) // 2 * a / side, (side - size[0]) // 2 * a / side)  # padding, in cells
    assert int((~rows).sum()) == 2 * round(pad[0])
    assert int((~cols).sum()) == 2 * round(pad[1])


def test_yes_no_ids_and_prompts(adapter, tiny_llava):
    _, processor = tiny_llava
    yes, no = adapter.yes_no_ids()
    assert sorted(processor.tokenizer.convert_ids_to_tokens(yes)) == ["Yes", "yes"]
    assert sorted(processor.tokenizer.convert_ids_to_tokens(no)) == ["No", "no"]
    text, offset = adapter.existence_prompt("red car")
    assert text == "Is there a red car in the image? Answer Yes or No." and text[offset:].startswith("red car")
    assert adapter.answer_prompt("What is it?", None) == "What is it?"
    expected = f"What is it?\n(A) cat\n(B) dog\n{OPTIONS_INSTRUCTION}"
    assert adapter.answer_prompt("What is it?", ["cat", "dog"]) == expected
    assert adapter.default_config().layers == (2, 4)  # (14, 32) of 32 layers, scaled to 4
    assert adapter.num_layers() == 4


def test_text_only_and_answer_encodings_run(adapter):
    from focus_modules.adapters import FinalView

    texts = adapter.generate(
        adapter.collate([adapter.encode_text("Question: What is the color of the cup?"), adapter.encode_text("cup")]),
        max_new_tokens=3,
    )
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    view = FinalView([Image.new("RGB", (30, 60))], "crop", [])
    enc = adapter.encode_answer(view, "What is the color of the cup?", ["red", "blue"])
    assert (enc.input_ids == adapter.image_token_id).sum() == 144
    assert enc.model_inputs["pixel_values"].shape == (1, 3, 96, 96)


def test_checkpoints_the_adapter_cannot_map_are_refused():
    from transformers import LlavaConfig, LlavaForConditionalGeneration, PixtralVisionConfig

    model, processor = build_tiny_llava(num_layers=2)
    pixtral = PixtralVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        head_dim=16,
        image_size=96,
        patch_size=8,
    )
    config = LlavaConfig(
        vision_config=pixtral,
        text_config=model.config.text_config,
        image_token_index=model.config.image_token_index,
        vision_feature_layer=-1,
    )
    with pytest.raises(ValueError, match="has a pixtral tower and a LlavaProcessor, whose image tokens it cannot map"):
        adapter_for(LlavaForConditionalGeneration(config), processor)
    # processor and model must count the same image tokens
    processor.vision_feature_select_strategy = "full"
    with pytest.raises(ValueError, match="selects vision features with 'full', the model with 'default'"):
        adapter_for(model, processor)
    model, processor = build_tiny_llava(num_layers=2, vision_tower="siglip", vision_feature_select_strategy="full")
    model.config.vision_feature_select_strategy = processor.vision_feature_select_strategy = "default"
    with pytest.raises(ValueError, match="would lose a patch"):
        adapter_for(model, processor)
