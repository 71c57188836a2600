"""Models placed with a device map (accelerate): value capture and FOCUS give the same results
as the plain model. On a CPU every part of the map is "cpu", so this checks that the capture
hooks, the prefix pass's KV cache and the wrapper work beside accelerate's dispatch hooks; the
gathering of values from several GPUs into one buffer is the same ``copy_`` on a GPU machine."""

import numpy as np
import pytest
import torch
from PIL import Image

from focus_modules import FocusConfig, FocusWrapper
from focus_modules.cli import load_model, rank_gpus

pytest.importorskip("accelerate")


def noise(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_rank_gpus_are_equal_contiguous_shares():
    assert rank_gpus(0, 1, 8) == list(range(8))
    assert rank_gpus(1, 2, 8) == [4, 5, 6, 7]
    assert rank_gpus(3, 4, 8) == [6, 7]
    with pytest.raises(ValueError, match="at least as many GPUs"):
        rank_gpus(0, 4, 2)


@pytest.fixture(scope="module")
def saved_llava(tmp_path_factory, tiny_llava):
    model, processor = tiny_llava
    path = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def split_map(model) -> dict[str, str]:
    """Every top-level part and every decoder layer as its own entry of the map."""
    layers = [f"model.language_model.layers.{i}" for i in range(model.config.text_config.num_hidden_layers)]
    return {
        "model.vision_tower": "cpu",
        "model.multi_modal_projector": "cpu",
        "model.language_model.embed_tokens": "cpu",
        **dict.fromkeys(layers, "cpu"),
        "model.language_model.norm": "cpu",
        "model.language_model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }


def test_focus_on_a_dispatched_model_equals_the_plain_model(saved_llava, tiny_llava):
    from accelerate import dispatch_model

    plain, processor = load_model(str(saved_llava), dtype="float32", device="cpu")
    mapped, _ = load_model(str(saved_llava), dtype="float32", device_map="cpu")
    mapped = dispatch_model(mapped, device_map=split_map(mapped), main_device="cpu", force_hooks=True)
    assert any(hasattr(m, "_hf_hook") for m in mapped.modules()), "accelerate's hooks should be installed"
    config = FocusConfig.preset("llava-1.5", n_steps=1, layers=(2, 4))
    images = [noise(200, 120), noise(90, 160, seed=1)]
    questions = ["Is the red car on the left or right side of the white truck?", "What is the color of the cat?"]
    targets = [["red car", "white truck"], ["cat"]]  # the first one runs the prefix pass
    results = [
        FocusWrapper(m, processor, config, max_new_tokens=2).answer(images, questions, targets=targets)
        for m in (plain, mapped)
    ]
    for a, b in zip(*results):
        assert a.answer == b.answer and a.final_boxes == b.final_boxes and a.forward_passes == b.forward_passes
        for map_a, map_b in zip(a.relevance_maps, b.relevance_maps):
            torch.testing.assert_close(map_b, map_a, rtol=0, atol=0)  # the same arithmetic on the same device
        assert [[r.box for r in rois] for rois in a.rois] == [[r.box for r in rois] for rois in b.rois]
