import numpy as np
import pytest
from PIL import Image

from focus_modules.adapters.views import (
    crop,
    expand_to_square,
    load_rgb,
    max_centre_distance,
    merge_overlapping,
    paste_on_canvas,
    pixel_box,
    union_box,
)


def coordinate_image(width, height):
    """R = x, G = y: every pixel says where it came from."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 7)], -1).astype(np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "I;16", "CMYK"])
def test_load_rgb_converts_any_mode(mode):
    image = Image.new("RGB", (5, 3), (200, 100, 50)).convert(mode)
    out = load_rgb(image)
    assert out.mode == "RGB" and out.size == (5, 3)


def test_load_rgb_arrays_paths_and_errors(tmp_path):
    assert load_rgb(np.zeros((4, 6), np.uint8)).size == (6, 4)
    assert load_rgb(np.zeros((4, 6, 4), np.uint8)).mode == "RGB"
    assert load_rgb(np.zeros((4, 6, 1), np.uint8)).size == (6, 4)
    path = tmp_path / "x.png"
    Image.new("LA", (3, 2)).save(path)
    assert load_rgb(str(path)).mode == "RGB" and load_rgb(path).size == (3, 2)
    with pytest.raises(ValueError, match="uint8"):
        load_rgb(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="PIL images"):
        load_rgb([[0, 1]])


@pytest.mark.parametrize("size, offset", [((40, 20), (0, 10)), ((21, 40), (9, 0)), ((8, 8), (0, 0))])
def test_expand_to_square(size, offset):
    image = coordinate_image(*size)
    square, got = expand_to_square(image, (1, 2, 3))
    assert got == offset and square.size == (max(size),) * 2
    arr = np.asarray(square)
    assert np.array_equal(arr[offset[1] : offset[1] + size[1], offset[0] : offset[0] + size[0]], np.asarray(image))
    if offset != (0, 0):
        assert tuple(arr[0, 0]) == (1, 2, 3)


def test_pixel_box_rounds_outward_and_keeps_a_pixel():
    assert pixel_box((1.2, 2.8, 5.1, 6.0), 10, 10) == (1, 2, 6, 6)
    assert pixel_box((-3, -1, 50, 70), 10, 8) == (0, 0, 10, 8)
    assert pixel_box((4.2, 4.3, 4.4, 4.5), 10, 10) == (4, 4, 5, 5)
    assert pixel_box((10, 10, 10, 10), 10, 10) == (9, 9, 10, 10)
    assert crop(coordinate_image(10, 10), (2.5, 3.5, 2.6, 3.6)).size == (1, 1)


def test_union_distance_and_merge():
    assert union_box([(0, 0, 2, 2), (5, 1, 6, 9)]) == (0, 0, 6, 9)
    assert max_centre_distance([(0, 0, 2, 2)]) == 0
    assert max_centre_distance([(0, 0, 2, 2), (3, 4, 5, 6), (0, 0, 0, 0)]) == pytest.approx(41**0.5)
    boxes = [(0, 0, 4, 4), (10, 10, 12, 12), (3, 3, 6, 6), (5, 5, 11, 11), (20, 0, 22, 2), (22, 0, 24, 2)]
    # 0-2 overlap, 2-3 overlap, 3-1 overlap: one chain; the touching pair (area 0) stays apart.
    assert merge_overlapping(boxes) == [(0, 0, 12, 12), (20, 0, 22, 2), (22, 0, 24, 2)]


def test_canvas_keeps_rois_and_their_relative_positions():
    image = coordinate_image(200, 120)
    boxes = [(150, 10, 170, 30), (10, 80, 40, 100), (60, 20, 80, 35)]
    canvas = paste_on_canvas(image, boxes, (0, 0, 0))
    arr = np.asarray(canvas)
    # Empty stretches shrink: the canvas is much smaller than the union box (160 x 90).
    assert canvas.width < 100 and canvas.height < 80
    found = []
    for x1, y1, x2, y2 in boxes:
        # Each ROI appears once, unscaled: find where its top-left pixel landed.
        hits = np.argwhere((arr[..., 0] == x1) & (arr[..., 1] == y1) & (arr[..., 2] == 7))
        assert len(hits) == 1
        y, x = hits[0]
        assert np.array_equal(arr[y : y + y2 - y1, x : x + x2 - x1], np.asarray(image)[y1:y2, x1:x2])
        found.append((x, y))
    # Left/right and above/below order survive.
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert np.sign(found[a][0] - found[b][0]) == np.sign(boxes[a][0] - boxes[b][0])
        assert np.sign(found[a][1] - found[b][1]) == np.sign(boxes[a][1] - boxes[b][1])
    assert paste_on_canvas(image, [(5, 5, 25, 15)], (0, 0, 0)).size == (20, 10)
    with pytest.raises(ValueError):
        paste_on_canvas(image, [], (0, 0, 0))


def test_merge_overlapping_with_a_buffer_merges_near_boxes_too():
    from focus_modules.adapters.views import merge_overlapping

    apart = [(0, 0, 10, 10), (30, 0, 40, 10)]  # 20 px apart
    assert merge_overlapping(apart) == [(0.0, 0.0, 10.0, 10.0), (30.0, 0.0, 40.0, 10.0)]
    assert merge_overlapping(apart, buffer=9) == merge_overlapping(apart)  # widened gap still 2 px
    assert merge_overlapping(apart, buffer=11) == [(0.0, 0.0, 40.0, 10.0)]  # the union of the boxes themselves
