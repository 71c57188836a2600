import numpy as np
import pytest
import torch
from eval_fixtures import FakeResult, FakeRoi
from PIL import Image

from focus_modules.eval.viz import render_result

BLUE = (20, 90, 160)


def _result(heat):
    return FakeResult(
        answer="A", targets=["cup"], question_type=1, rois=[[FakeRoi((0, 0, 10, 10), 1.0, 0.9)]], relevance_maps=[heat]
    )


def test_map_extent_places_the_map_over_a_padded_square():
    image = Image.new("RGB", (400, 200), BLUE)
    heat = torch.zeros(8, 8)
    heat[0, 0] = 1.0  # hot in the top-left corner of the map
    stretched = render_result(image, _result(heat))
    # a map over the padded 400 x 400 square: its top rows lie above the image
    padded = render_result(image, _result(heat), map_extents=[(0, -100, 400, 300)])
    assert stretched.size == padded.size == (800, 200)
    assert stretched.getpixel((400 + 30, 20))[0] > 100  # hot corner inside the image
    assert padded.getpixel((400 + 30, 20)) == BLUE  # hot corner in the padding, off the image
    assert render_result(image, _result(heat), max_side=100).size == (200, 50)


def test_vanilla_result_is_the_image_alone_and_bad_maps_are_refused():
    image = Image.new("RGB", (30, 20), BLUE)
    plain = render_result(image, FakeResult(answer="A", targets=[], question_type=1, rois=[]))
    assert plain.size == (30, 20) and plain.getpixel((15, 10)) == BLUE
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        render_result(image, _result(torch.zeros(2, 3, 3)))


def test_heat_map_uses_the_colour_scale_and_draws_it():
    from focus_modules.eval.viz import HEAT_SCALE, heat_colors

    assert heat_colors(np.array([0.0]))[0].tolist() == list(HEAT_SCALE[0][1])
    assert heat_colors(np.array([1.0]))[0].tolist() == list(HEAT_SCALE[-1][1])
    image = Image.new("RGB", (400, 400), (0, 0, 0))
    heat = torch.zeros(8, 8)
    heat[3, 3] = 1.0
    picture = render_result(image, _result(heat))
    # the hottest cell's centre (panel 1, cell (3, 3) of 50 px) is near the scale's top colour,
    # mostly opaque over black: (252, 255, 164) x 210 / 255 = (207, 210, 135) at the maximum;
    # a relevance of 0.9 would give (196, 164, 80)
    r, g, b = picture.getpixel((400 + 175, 175))
    assert r > 190 and g > 180 and b > 100
    # far from the hot cell the map is 0: transparent over the black image
    assert picture.getpixel((400 + 25, 25)) == (0, 0, 0)
    # the scale strip along the panel's bottom runs from the low colour to the high one
    strip_y = 400 - 4 - 5
    low, high = picture.getpixel((400 + 5, strip_y)), picture.getpixel((400 + 4 + 400 // 3 - 2, strip_y))
    assert sum(low) < 60 and sum(high) > 600


def test_truth_boxes_and_caption():
    image = Image.new("RGB", (400, 200), BLUE)
    heat = torch.zeros(8, 8)
    lines = ["Question: what?", "FOCUS: A (correct)"]
    picture = render_result(image, _result(heat), truth_boxes=[(100, 100, 140, 140)], caption=lines)
    from focus_modules.eval.viz import CAPTION_LINE_HEIGHT

    assert picture.size == (800, 200 + CAPTION_LINE_HEIGHT * 2 + 8)
    # the box is drawn 3 px outside the object, in white, on both panels; the object stays as it was
    for x0 in (0, 400):
        assert picture.getpixel((x0 + 97, 120)) == (255, 255, 255)
        assert picture.getpixel((x0 + 120, 120)) != (255, 255, 255)
    caption = np.asarray(picture.crop((0, 200, 800, picture.height)))
    assert caption.max() > 200 and caption.min() == 0  # light text (antialiased) on black
