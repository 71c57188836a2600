"""``FocusWrapper(..., compile=...)``: the language model under ``torch.compile`` gives the same
answers, ROIs and maps as eager on the shipped tiny model, with the value-capture hooks
recording inside the compiled graph, and batches padded to sequence-length buckets.

The end-to-end test uses dynamo with the ``"eager"`` backend: the graph capture (where hooks
can silently stop firing) is what is under test, and it keeps the test to about a minute on a
CPU; inductor's code generation is exercised by ``benchmarks/e2e.py --compile``.
"""

import math

import pytest
import torch

from focus_modules import FocusWrapper
from focus_modules.synthetic import make_scene
from focus_modules.synthetic.heldout import REGRESSION_SEED
from focus_modules.synthetic.tiny_llava import load_tiny_focus_llava, tiny_focus_config

FP32_EPS = torch.finfo(torch.float32).eps


def test_collate_pads_to_the_bucket(tiny_llava):
    from focus_modules.adapters import Encoding, adapter_for

    adapter = adapter_for(*tiny_llava)
    encodings = [Encoding(torch.arange(5)), Encoding(torch.arange(9))]
    assert adapter.collate(encodings).inputs["input_ids"].shape == (2, 9)
    adapter.pad_to_multiple_of = 8
    try:
        batch = adapter.collate(encodings)
    finally:
        adapter.pad_to_multiple_of = 1
    assert batch.inputs["input_ids"].shape == (2, 16) and batch.offsets == [11, 7]
    assert batch.inputs["attention_mask"].sum(-1).tolist() == [5, 9]


@pytest.mark.slow
def test_compiled_wrapper_equals_eager_on_the_shipped_tiny_model():
    # One question with two given targets (prefix reuse under compile): each kind of model call
    # (prefix, suffix, verify, answer prefill and decoding) is one graph to capture.
    scene = make_scene((REGRESSION_SEED, 1, 0))
    question = scene.questions_of("spatial")[0]
    images, questions, options = [scene.image], [question.question], [list(question.options)]
    targets = [["red car", "white truck"]]
    config = tiny_focus_config(n_steps=1)
    model, processor = load_tiny_focus_llava()
    eager = FocusWrapper(model, processor, config, max_new_tokens=2).answer(images, questions, options, targets)
    model, processor = load_tiny_focus_llava()  # compile changes the model in place
    compiled_fw = FocusWrapper(model, processor, config, max_new_tokens=2, compile={"backend": "eager"}, bucket=32)
    assert compiled_fw.adapter.pad_to_multiple_of == 32
    compiled = compiled_fw.answer(images, questions, options, targets)
    # Padding to the bucket moves each prompt to other positions and batch shapes: values differ
    # by rounding (sqrt(K) eps per reduction of length K, per layer, headroom 4), and a map
    # multiplies one similarity row per target token (at most 3 here), each with about twice that.
    text = model.config.text_config
    longest = max(max(r.tokens["relevance"] for r in eager), text.hidden_size, text.intermediate_size)
    value_rtol = 4 * FP32_EPS * math.sqrt(longest) * text.num_hidden_layers
    rtol = 2 * (3 + 1) * value_rtol
    for a, b in zip(eager, compiled):
        assert a.answer == b.answer and a.targets == b.targets and a.final_boxes == b.final_boxes
        assert a.forward_passes == b.forward_passes
        assert [[r.box for r in rois] for rois in a.rois] == [[r.box for r in rois] for rois in b.rois]
        for map_a, map_b in zip(a.relevance_maps, b.relevance_maps):
            torch.testing.assert_close(map_b, map_a, rtol=rtol, atol=rtol * float(map_a.max()))
    # A second call: the hooks stay attached and keep recording.
    again = compiled_fw.answer(images, questions, options, targets)
    torch.testing.assert_close(again[0].relevance_maps[0], compiled[0].relevance_maps[0])
