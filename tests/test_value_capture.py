import pytest
import torch
from PIL import Image
from torch import nn

from focus_modules import ValueCapture
from focus_modules.modules.value_capture import find_decoder_layers


def cached_values(cache, layer: int) -> torch.Tensor:
    """``[B, H_kv, N, D]`` values of one layer, across the cache APIs of 4.46 ... 5.x."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].values
    if hasattr(cache, "value_cache"):
        return cache.value_cache[layer]
    return cache[layer][1]


def llava_inputs(processor, sizes):
    prompt = "USER: <image>\nIs there a red car in the image? ASSISTANT:"
    images = [Image.new("RGB", size, (40 * i, 90, 200 - 30 * i)) for i, size in enumerate(sizes)]
    # Different prompt lengths so that left padding is exercised.
    texts = [prompt.replace("red car", "car" if i % 2 else "red car") for i in range(len(sizes))]
    processor.tokenizer.padding_side = "left"
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


def test_hook_values_equal_cache_values(tiny_llava):
    model, processor = tiny_llava
    inputs = llava_inputs(processor, [(96, 64), (50, 120)])
    assert (inputs["attention_mask"] == 0).any(), "the batch should contain left padding"
    with torch.no_grad(), ValueCapture(model, layers=(1, 3)) as capture:
        out = model(**inputs, use_cache=True)
    values = capture.values
    batch, seq = inputs["input_ids"].shape
    num_kv, head_dim = model.config.text_config.num_key_value_heads, 16
    assert values.shape == (batch, 2, seq, num_kv, head_dim)
    cache = getattr(out, "cache", None) or out.past_key_values
    for slot, layer in enumerate((1, 2)):
        expected = cached_values(cache, layer).transpose(1, 2)  # [B, N, H_kv, D]
        torch.testing.assert_close(values[:, slot], expected, rtol=0, atol=0)


def test_hooks_only_on_selected_language_layers_and_always_removed(tiny_llava):
    model, processor = tiny_llava
    hooked = lambda: [n for n, m in model.named_modules() if n.endswith("v_proj") and m._forward_hooks]  # noqa: E731
    inputs = llava_inputs(processor, [(64, 64)])
    capture = ValueCapture(model, layers=(0, 2))
    with capture:
        names = hooked()
        assert len(names) == 2
        assert all("vision" not in n for n in names), names
        assert all(n.endswith((".layers.0.self_attn.v_proj", ".layers.1.self_attn.v_proj")) for n in names)
        model(**inputs, use_cache=False)
    assert hooked() == []
    with pytest.raises(RuntimeError, match="boom"):
        with ValueCapture(model, layers=(0, 2)):
            raise RuntimeError("boom")
    assert hooked() == []


def test_attached_hooks_stay_and_record_only_inside_the_context(tiny_llava):
    model, processor = tiny_llava
    hooked = lambda: [n for n, m in model.named_modules() if n.endswith("v_proj") and m._forward_hooks]  # noqa: E731
    a = llava_inputs(processor, [(64, 64)])
    b = llava_inputs(processor, [(64, 64)])
    b["pixel_values"] = -a["pixel_values"]
    capture = ValueCapture(model, layers=(2, 4)).attach()
    try:
        with torch.no_grad():
            with capture:
                model(**a, use_cache=False)
            assert len(hooked()) == 2  # kept after the context
            recorded = capture.values.clone()
            model(**b, use_cache=False)  # outside the context: not recorded
            torch.testing.assert_close(capture.values, recorded, rtol=0, atol=0)
            with capture:
                model(**b, use_cache=False)
                assert not torch.equal(capture.values, recorded)
    finally:
        capture.detach()
    assert hooked() == []


def test_buffer_is_reused_and_last_forward_wins(tiny_llava):
    model, processor = tiny_llava
    a = llava_inputs(processor, [(64, 64)])
    b = llava_inputs(processor, [(64, 64)])
    b["pixel_values"] = -a["pixel_values"]  # same shapes, different pixels
    with torch.no_grad(), ValueCapture(model, layers=(2, 4)) as capture:
        model(**a, use_cache=False)
        first = capture.values.clone()
        buffer = capture.values.data_ptr()
        model(**b, use_cache=False)
        assert capture.values.data_ptr() == buffer
        assert not torch.equal(capture.values, first)


def test_errors(tiny_llava):
    model, _ = tiny_llava
    with pytest.raises(ValueError, match=r"4 decoder layers"):
        ValueCapture(model, layers=(2, 5))
    with pytest.raises(ValueError, match="half-open"):
        ValueCapture(model, layers=(1, 2, 3))
    with pytest.raises(RuntimeError, match="no forward"):
        _ = ValueCapture(model, layers=(0, 1)).values
    with pytest.raises(ValueError, match="could not find"):
        find_decoder_layers(nn.Sequential(nn.Linear(2, 2)))


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.head_dim = 2
        self.v_proj = nn.Linear(4, 4)


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = _Attn()


def test_layer_paths_of_older_transformers():
    # 4.46-4.51 LLaVA: model.language_model.model.layers, beside a vision tower with v_proj.
    old = nn.Module()
    old.vision_tower = nn.Module()
    old.vision_tower.layers = nn.ModuleList([_Layer()])
    old.language_model = nn.Module()
    old.language_model.model = nn.Module()
    old.language_model.model.layers = nn.ModuleList([_Layer(), _Layer()])
    assert find_decoder_layers(old) is old.language_model.model.layers
    # 4.46-4.51 Qwen2.5-VL: model.model.layers beside model.visual.
    qwen = nn.Module()
    qwen.visual = nn.Module()
    qwen.visual.layers = nn.ModuleList([_Layer()])
    qwen.model = nn.Module()
    qwen.model.layers = nn.ModuleList([_Layer()])
    assert find_decoder_layers(qwen) is qwen.model.layers
