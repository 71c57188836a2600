import dataclasses

import pytest

from focus_modules import FocusConfig


def test_llava15_preset_follows_table7():
    cfg = FocusConfig.preset("llava-1.5", dataset="vstar", n_steps=8)
    assert (cfg.layers, cfg.k, cfg.s_min, cfg.s_max, cfg.s_dist) == ((14, 32), 30, 3, 5, 2.0)
    assert (cfg.t_type2, cfg.t_obj_dist, cfg.nms_threshold, cfg.expand_threshold) == (0.6, 1200.0, 0.3, 0.5)
    assert FocusConfig.preset("llava-1.5", n_steps=2).k == 15
    assert FocusConfig.preset("llava-1.5", dataset="hrbench").s_dist == 3.0


def test_onevision_preset_follows_table7():
    vstar = FocusConfig.preset("llava-onevision", dataset="vstar")
    other = FocusConfig.preset("llava-onevision", dataset="hrbench", n_steps=1)
    assert (vstar.layers, vstar.k, vstar.s_max, vstar.s_dist, vstar.t_type2) == ((21, 28), 30, 9, 2.0, 0.5)
    assert (other.s_max, other.k) == (5, 30)
    assert vstar.downsample > 1 and vstar.smooth_sigma is not None


def test_replace_and_overrides():
    cfg = dataclasses.replace(FocusConfig.preset("llava-1.5"), layers=(2, 6))
    assert cfg.layers == (2, 6)
    assert FocusConfig.preset("qwen2.5-vl", k=7).k == 7


@pytest.mark.parametrize(
    "kwargs",
    [dict(layers=(5, 5)), dict(layers=(-1, 3)), dict(s_min=6, s_max=5), dict(k=0), dict(nms_threshold=1.5)],
)
def test_invalid_fields_raise(kwargs):
    with pytest.raises(ValueError):
        FocusConfig(**kwargs)


def test_unknown_family_dataset_and_field_raise():
    with pytest.raises(ValueError, match="llava-1.5"):
        FocusConfig.preset("blip-2")
    with pytest.raises(ValueError, match="vstar"):
        FocusConfig.preset("llava-1.5", dataset="coco")
    with pytest.raises(ValueError, match="not_a_field"):
        FocusConfig.preset("llava-1.5", not_a_field=1)


def test_layer_range_outside_model_is_an_error():
    cfg = FocusConfig.preset("llava-1.5")
    cfg.check_layers(32)
    with pytest.raises(ValueError, match="has 4 layers.*--set layers=2,4"):
        cfg.check_layers(4)
