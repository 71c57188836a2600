"""Prefix reuse in the relevance pass: the image is encoded once per question, each target's
suffix runs on a copy of the KV cache, and the assembled values equal one full pass per
prompt up to floating-point rounding (LLaVA-1.5, LLaVA-OneVision incl. ~7k image tokens,
Qwen2.5-VL)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from focus_modules import FocusConfig, FocusWrapper, ValueCapture
from focus_modules.adapters import Encoding, adapter_for
from focus_modules.functional import relevance_map
from focus_modules.prefix_reuse import capture_existence_values, shared_prefix_length

FP32_EPS = torch.finfo(torch.float32).eps


def noise(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def rounding_tolerance(model, seq_len: int) -> float:
    """Relative tolerance between two fp32 runs of the same network that differ only in the
    order of their sums (batch shapes, attention over a cache vs the whole sequence): a
    length-K dot product carries ~sqrt(K) eps of relative error, K the longest reduction (the
    sequence or the hidden width), and each decoder layer adds its own; a factor 4 of headroom."""
    text = model.config.text_config
    longest = max(seq_len, text.hidden_size, text.intermediate_size)
    return 4 * FP32_EPS * math.sqrt(longest) * text.num_hidden_layers


def run_both(model, processor, images, targets, layers=(1, 4)):
    """Values and maps from full passes and from prefix reuse for ``targets``: ``(image
    index, target)`` pairs."""
    adapter = adapter_for(model, processor)
    encodings = [adapter.encode_existence(images[i], t) for i, t in targets]
    owners = [i for i, _ in targets]
    out = []
    with torch.no_grad(), ValueCapture(model, layers, decoder_layers=adapter.decoder_layers()) as capture:
        for reuse in (False, True):
            captured = capture_existence_values(adapter, capture, encodings, owners, reuse_prefix=reuse)
            out.append((captured, captured.values.clone()))
    return encodings, out


def maps_of(encodings, captured, values):
    from focus_modules.wrapper import FocusWrapper as Wrapper

    target_idx, visual_idx, grid_hw, _ = Wrapper._map_indices(encodings, captured.offsets, values.device)
    return relevance_map(values, target_idx, visual_idx, grid_hw, captured.attention_mask, impl="torch")


def assert_reuse_equals_full(model, encodings, out):
    (full, full_values), (reused, reused_values) = out
    assert full.offsets == reused.offsets
    assert torch.equal(full.attention_mask, reused.attention_mask)
    real = full.attention_mask.bool()[:, None, :, None, None].expand_as(full_values)
    scale = full_values[real].abs().max()
    rtol = rounding_tolerance(model, full_values.shape[2])
    torch.testing.assert_close(reused_values[real], full_values[real], rtol=0, atol=rtol * scale)
    # A map multiplies one row-normalised similarity per target token, each carrying about
    # twice the values' relative error.
    tokens = max(e.target_positions.numel() for e in encodings)
    map_rtol = 2 * (tokens + 1) * rtol
    full_maps, reused_maps = maps_of(encodings, full, full_values), maps_of(encodings, reused, reused_values)
    torch.testing.assert_close(reused_maps, full_maps, rtol=map_rtol, atol=map_rtol * full_maps.max())


# Question 0 has two targets, question 1 one (a full pass), question 2 three.
TARGETS = [(0, "red car"), (1, "cat"), (0, "white truck"), (2, "dog"), (2, "blue umbrella"), (2, "ball")]


def check_family(model, processor, sizes):
    images = [noise(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    encodings, out = run_both(model, processor, images, TARGETS)
    assert_reuse_equals_full(model, encodings, out)
    (full, _), (reused, _) = out
    lengths = [e.input_ids.numel() for e in encodings]
    assert full.passes == [2, 1, 3] and reused.passes == [3, 1, 4]
    assert full.tokens == [lengths[0] + lengths[2], lengths[1], sum(lengths[3:])]
    prefix = [shared_prefix_length([encodings[0], encodings[2]]), shared_prefix_length(encodings[3:])]
    assert reused.tokens == [full.tokens[0] - prefix[0], lengths[1], full.tokens[2] - 2 * prefix[1]]
    for enc in (encodings[0], encodings[2]):  # the whole image block is in their shared prefix
        assert prefix[0] > int(enc.visual_positions.max())


def test_llava(tiny_llava):
    check_family(*tiny_llava, [(200, 120), (160, 90), (100, 300)])


def test_onevision(tiny_onevision):
    # different image sizes: prefixes of different lengths share one left-padded prefix batch
    check_family(*tiny_onevision, [(200, 120), (160, 90), (100, 300)])


def test_qwen2_5_vl(tiny_qwen2_5_vl):
    check_family(*tiny_qwen2_5_vl, [(200, 120), (160, 90), (100, 300)])


def test_qwen2_5_vl_needs_its_mrope_positions(tiny_qwen2_5_vl):
    """The suffix's 3-D positions matter: one position off and the values differ."""
    model, processor = tiny_qwen2_5_vl
    adapter = adapter_for(model, processor)
    shifted = adapter.suffix_position_ids
    adapter.suffix_position_ids = lambda *args: shifted(*args) + 1
    encodings = [adapter.encode_existence(noise(200, 120), t) for t in ("red car", "white truck")]
    with torch.no_grad(), ValueCapture(model, (1, 4)) as capture:
        captured = capture_existence_values(adapter, capture, encodings, [0, 0], reuse_prefix=False)
        full = captured.values.clone()
        wrong = capture_existence_values(adapter, capture, encodings, [0, 0], reuse_prefix=True).values
    prefix = captured.offsets[1] + shared_prefix_length(encodings)
    rtol = rounding_tolerance(model, full.shape[2])
    torch.testing.assert_close(wrong[1, :, :prefix], full[1, :, :prefix], rtol=0, atol=rtol * full.abs().max())
    # layer 1 of the suffix: its values depend on the positions through layer 0's attention
    assert (wrong[1, :, prefix:] - full[1, :, prefix:]).abs().max() > 100 * rtol * full.abs().max()


@pytest.mark.slow
def test_onevision_with_seven_thousand_image_tokens():
    """The real model's token layout (27 x 27 tokens per tile, 3 x 3 tiles: 729 + 81 x 82 image
    tokens) at tiny width; 378-px tiles (27 patches of 14 px) stand in for SigLIP's 384."""
    from tiny_models import build_tiny_onevision

    model, processor = build_tiny_onevision(
        tile_size=378, patch_size=14, hidden_size=32, num_heads=2, num_kv_heads=1, num_layers=3
    )
    image = noise(1134, 1100)
    encodings, out = run_both(model, processor, [image], [(0, "red car"), (0, "white truck")], layers=(1, 3))
    assert encodings[0].visual_positions.numel() > 6000 and encodings[0].input_ids.numel() > 7000
    assert_reuse_equals_full(model, encodings, out)
    assert out[1][0].passes == [3]


def test_shared_prefix_stops_at_the_first_target_token():
    ids = torch.tensor([1, 2, 3, 4, 9, 9])

    def enc(ids, target):
        return Encoding(ids, target_positions=torch.tensor(target))

    # identical token ids up to the end (same target word): the target still starts the suffix
    assert shared_prefix_length([enc(ids, [4]), enc(ids.clone(), [4])]) == 4
    assert shared_prefix_length([enc(ids, [4]), enc(torch.tensor([1, 2, 7, 4, 9]), [3])]) == 2
    assert shared_prefix_length([enc(ids, [4, 5]), enc(torch.tensor([1, 2, 3]), [2])]) == 2


def test_prompts_of_one_question_that_share_too_little_get_full_passes(tiny_llava):
    model, processor = tiny_llava
    adapter = adapter_for(model, processor)
    # Two different images "of one question": the prefixes part inside the image block.
    encodings = [adapter.encode_existence(noise(90, 90, seed=s), "cat") for s in (0, 1)]
    with torch.no_grad(), ValueCapture(model, (1, 4)) as capture:
        captured = capture_existence_values(adapter, capture, encodings, ["q", "q"])
    assert captured.passes == [2]


def test_wrapper_maps_rois_and_counts_with_and_without_reuse(tiny_llava):
    model, processor = tiny_llava
    config = FocusConfig.preset("llava-1.5", n_steps=1, layers=(2, 4))
    images = [noise(200, 120), noise(90, 160, seed=1)]
    questions = ["Is the red car on the left or right side of the white truck?", "What is the color of the cat?"]
    targets = [["red car", "white truck"], ["cat"]]
    results = [
        FocusWrapper(model, processor, config, max_new_tokens=2, reuse_prefix=reuse).answer(
            images, questions, targets=targets
        )
        for reuse in (False, True)
    ]
    rtol = rounding_tolerance(model, 200)
    for full, reused in zip(*results):
        assert full.answer == reused.answer and full.final_boxes == reused.final_boxes
        for a, b in zip(full.relevance_maps, reused.relevance_maps):
            torch.testing.assert_close(b, a, rtol=10 * rtol, atol=10 * rtol * a.max())
        assert [[r.box for r in rois] for rois in full.rois] == [[r.box for r in rois] for rois in reused.rois]
    assert [r.forward_passes["relevance"] for r in results[0]] == [2, 1]
    assert [r.forward_passes["relevance"] for r in results[1]] == [3, 1]
    assert results[1][0].tokens["relevance"] < results[0][0].tokens["relevance"]
    assert results[1][1].tokens == results[0][1].tokens
