"""Stitching window relevance maps (ops/stitch_maps.py): the window layout, windows mapped back
to the right image cells (planted features, odd sizes, overlaps, padded border windows), both
combines against a direct per-pixel construction, and the vectorised path against the loop."""

import math

import pytest
import torch

from focus_modules.ops.boxes import CellGeometry, cells_to_pixels, image_cell_mask
from focus_modules.ops.stitch_maps import (
    StitchedMaps,
    stitch_maps,
    stitch_maps_reference,
    stitched_grid,
    window_boxes,
    window_count,
    window_starts,
)

F64 = torch.float64
PATHS = (stitch_maps, stitch_maps_reference)


def full_windows(image_size, side, overlap, grid):
    """Window maps' geometries as a global-view model gives them for square crops inside the
    image: the crop's corner, ``side / grid`` pixel cells; all windows of one image."""
    boxes = window_boxes(image_size, side, overlap)
    num = len(boxes)
    geometry = CellGeometry(
        boxes[:, :2].to(F64),
        torch.full((num, 2), side / grid, dtype=F64),
        torch.tensor([image_size] * num, dtype=F64),
    )
    return boxes, geometry


def stitch(maps, grid_hw, windows, owner, num_maps, valid=None, combine="mean", path=stitch_maps) -> StitchedMaps:
    grid, out_hw = stitched_grid(windows, owner, num_maps)
    return path(maps, grid_hw, windows, owner, grid, out_hw, valid, combine), grid, out_hw


# --- layout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, side, overlap",
    [
        ((1000, 700), 256, 0.5),
        ((1003, 701), 250, 0.3),
        ((8192, 6144), 2048, 0.5),
        ((7, 300), 64, 0.0),
        ((64, 64), 64, 0.5),
    ],
)
def test_windows_cover_the_image_with_the_overlap_asked(size, side, overlap):
    boxes = window_boxes(size, side, overlap)
    width, height = size
    assert len(boxes) == window_count(size, side, overlap)
    assert (
        bool((boxes[:, :2] >= 0).all()) and bool((boxes[:, 2] <= width).all()) and bool((boxes[:, 3] <= height).all())
    )
    for axis, length in ((0, width), (1, height)):
        starts = window_starts(length, side, overlap)
        assert starts[0] == 0 and starts[-1] + min(side, length) == length
        expected = 1 if length <= side else math.ceil((length - side) / (side * (1 - overlap))) + 1
        assert len(starts) == expected
        for a, b in zip(starts, starts[1:]):  # neighbours overlap by at least `overlap` (up to rounding)
            assert side - (b - a) >= overlap * side - 1
        sides = (boxes[:, axis + 2] - boxes[:, axis]).unique().tolist()
        assert sides == [min(side, length)]
    covered = torch.zeros(height, width, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.tolist():
        covered[y1:y2, x1:x2] = True
    assert bool(covered.all())


def test_window_layout_errors():
    with pytest.raises(ValueError, match="overlap in \\[0, 1\\)"):
        window_boxes((100, 100), 32, 1.0)
    with pytest.raises(ValueError, match="side >= 1"):
        window_boxes((100, 100), 0, 0.5)
    with pytest.raises(ValueError, match="image_size must be positive"):
        window_boxes((0, 100), 32, 0.5)


def test_stitched_grid_takes_the_finest_cells_and_smallest_origin():
    windows = CellGeometry(
        torch.tensor([[0.0, -14.0], [172.0, -14.0], [10.0, 5.0]], dtype=F64),
        torch.tensor([[8.0, 8.0], [8.0, 8.0], [5.0, 6.0]], dtype=F64),
        torch.tensor([[300.0, 100.0], [300.0, 100.0], [51.0, 37.0]], dtype=F64),
    )
    grid, out_hw = stitched_grid(windows, torch.tensor([0, 0, 1]), 2)
    assert grid.origin.tolist() == [[0.0, -14.0], [10.0, 5.0]]
    assert grid.cell_size.tolist() == [[8.0, 8.0], [5.0, 6.0]]
    # ceil((100 + 14) / 8) = 15 rows, 300 / 8 = 37.5 -> 38 columns; ceil(41 / 5) = 9, 32 / 6 -> 6
    assert out_hw.tolist() == [[15, 38], [6, 9]]
    with pytest.raises(ValueError, match="share one image_size"):
        stitched_grid(windows, torch.tensor([0, 0, 0]), 1)
    with pytest.raises(ValueError, match="at least one window"):
        stitched_grid(windows, torch.tensor([0, 0, 2]), 3)


# --- windows back at the right cells ----------------------------------------------------------


def direct_stitch(image_w, image_h, boxes, maps, combine):
    """Per image pixel (1-px cells, windows aligned): the windows containing it, each window's
    value divided by the window's mean, combined; then divided by the total. Independent of the
    op's index arithmetic."""
    out = torch.zeros(image_h, image_w, dtype=F64)
    for y in range(image_h):
        for x in range(image_w):
            seen = []
            for (x1, y1, x2, y2), m in zip(boxes.tolist(), maps):
                if x1 <= x < x2 and y1 <= y < y2:
                    window = m[: y2 - y1, : x2 - x1].double()
                    seen.append(float(window[y - y1, x - x1] / window.mean()))
            out[y, x] = sum(seen) / len(seen) if combine == "mean" else max(seen)
    return out / out.sum()


@pytest.mark.parametrize("combine", ["mean", "max"])
@pytest.mark.parametrize("path", PATHS)
def test_overlapping_windows_land_on_their_pixels(combine, path):
    # 11 x 7 image, 5 px windows of 1 px cells (a 5 x 5 "model grid"), overlap 0.4: starts x
    # 0, 3, 6 and y 0, 2; every window is aligned with the 1-px stitched grid.
    width, height, side = 11, 7, 5
    boxes, windows = full_windows((width, height), side, 0.4, grid=side)
    assert window_starts(width, side, 0.4) == [0, 3, 6] and window_starts(height, side, 0.4) == [0, 2]
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(len(boxes), side, side, generator=gen) + 0.1
    maps /= maps.sum((1, 2), keepdim=True)
    grid_hw = torch.full((len(boxes), 2), side)
    result, grid, out_hw = stitch(
        maps, grid_hw, windows, torch.zeros(len(boxes), dtype=torch.long), 1, combine=combine, path=path
    )
    assert out_hw.tolist() == [[height, width]] and grid.origin.tolist() == [[0.0, 0.0]]
    expected = direct_stitch(width, height, boxes, maps, combine)
    torch.testing.assert_close(result.maps[0].double(), expected, rtol=2**-22, atol=0)
    coverage = torch.zeros(height, width, dtype=torch.long)
    for x1, y1, x2, y2 in boxes.tolist():
        coverage[y1:y2, x1:x2] += 1
    assert torch.equal(result.coverage[0], coverage)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "size, side, grid",
    [((1024, 768), 256, 16), ((1003, 701), 250, 16), ((513, 97), 96, 12)],  # aligned; odd, misaligned
)
def test_a_planted_feature_comes_back_at_its_pixel_place(path, size, side, grid):
    boxes, windows = full_windows(size, side, 0.5, grid)
    cell = side / grid
    aligned = side % grid == 0 and all(int(v) % int(cell) == 0 for v in boxes[:, :2].flatten())
    for point in [(5.0, 7.0), (size[0] - 3.0, size[1] - 2.0), (size[0] * 0.61, size[1] * 0.37)]:
        maps = torch.ones(len(boxes), grid, grid)
        for p, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            if x1 <= point[0] < x2 and y1 <= point[1] < y2:
                maps[p, int((point[1] - y1) // cell), int((point[0] - x1) // cell)] = 50.0
        maps /= maps.sum((1, 2), keepdim=True)
        result, geometry, out_hw = stitch(
            maps, torch.full((len(boxes), 2), grid), windows, torch.zeros(len(boxes), dtype=torch.long), 1, path=path
        )
        h, w = out_hw[0].tolist()
        assert result.maps.shape[1:] == (h, w) and (h, w) == (math.ceil(size[1] / cell), math.ceil(size[0] / cell))
        # every cell whose centre lies in the image is covered, no other
        assert torch.equal(result.coverage[0] > 0, image_cell_mask(geometry, out_hw, h, w)[0])
        row, col = divmod(int(result.maps[0].argmax()), w)
        box = cells_to_pixels(torch.tensor([[col, row, col + 1, row + 1]], dtype=torch.float32), geometry)[
            0, 0
        ].tolist()
        # aligned windows: exactly the cell holding the point; otherwise a neighbour at most
        # (a window cell goes to the stitched cell whose centre it holds)
        slack = 0.0 if aligned else cell
        assert box[0] - slack <= point[0] < box[2] + slack and box[1] - slack <= point[1] < box[3] + slack


@pytest.mark.parametrize("path", PATHS)
def test_padded_border_windows_read_only_their_valid_cells(path):
    # A 300 x 100 image, 128 px windows of 16 x 16 cells: one row of windows, each a 128 x 100
    # crop that a LLaVA-like model pads to a square (14 px above and below): origin y = -14.
    width, height, side, a = 300, 100, 128, 16
    boxes = window_boxes((width, height), side, 0.5)
    num = len(boxes)
    windows = CellGeometry(
        torch.stack([boxes[:, 0].double(), torch.full((num,), -14.0, dtype=F64)], 1),
        torch.full((num, 2), side / a, dtype=F64),
        torch.tensor([[width, height]] * num, dtype=F64),
    )
    centres_y = -14.0 + (torch.arange(a) + 0.5) * 8
    valid = ((centres_y >= 0) & (centres_y < height))[None, :, None].expand(num, a, a).clone()
    maps = torch.where(valid, 1.0, 1e6)  # padding cells carry huge values that must never be read
    maps[1, 7, 3] = 30.0
    maps /= maps.sum((1, 2), keepdim=True)
    result, grid, out_hw = stitch(
        maps, torch.full((num, 2), a), windows, torch.zeros(num, dtype=torch.long), 1, valid, "max", path
    )
    assert grid.origin[0].tolist() == [0.0, -14.0] and out_hw.tolist() == [[15, 38]]
    rows_in_image = ((-14.0 + (torch.arange(15) + 0.5) * 8) >= 0) & ((-14.0 + (torch.arange(15) + 0.5) * 8) < height)
    assert torch.equal(result.coverage[0].amax(1) > 0, rows_in_image)  # padding rows: no window
    stitched = result.maps[0]
    assert float(stitched[~rows_in_image].abs().max()) == 0.0
    row, col = divmod(int(stitched.argmax()), 38)
    assert (row, col) == (7, int(boxes[1, 0]) // 8 + 3)  # window 1's cell (7, 3), at its pixels
    assert float(stitched.sum()) == pytest.approx(1.0, rel=1e-6)


# --- the vectorised path against the loop ------------------------------------------------------


def random_case(seed, dtype):
    """Three stitched maps of different images; windows of several cell sizes (as a
    native-resolution model's crops give), origins off the stitched grid, padded maps of
    different grid sizes in one batch, random valid masks."""
    gen = torch.Generator().manual_seed(seed)
    images = [(517, 333), (97, 211), (1280, 720)]
    origins, cells, sizes, grid_hw, owner = [], [], [], [], []
    for b, (w, h) in enumerate(images):
        for _ in range(int(torch.randint(1, 6, (), generator=gen))):
            cell = torch.tensor([float(torch.randint(6, 40, (), generator=gen))] * 2, dtype=F64)
            cell[1] *= 1 + 0.2 * float(torch.rand((), generator=gen))
            hw = torch.randint(3, 14, (2,), generator=gen)
            origin = torch.rand(2, generator=gen, dtype=F64) * torch.tensor([w, h], dtype=F64) - 0.3 * cell * hw.flip(0)
            origins.append(origin)
            cells.append(cell)
            sizes.append(torch.tensor([w, h], dtype=F64))
            grid_hw.append(hw)
            owner.append(b)
    num = len(owner)
    grid_hw = torch.stack(grid_hw)
    h_max, w_max = (int(v) for v in grid_hw.max(0).values)
    maps = torch.rand(num, h_max, w_max, generator=gen) ** 3
    valid = torch.rand(num, h_max, w_max, generator=gen) > 0.2
    windows = CellGeometry(torch.stack(origins), torch.stack(cells), torch.stack(sizes))
    return maps.to(dtype), grid_hw, windows, torch.tensor(owner), valid, len(images)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("combine", ["mean", "max"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_reference(dtype, combine, seed):
    maps, grid_hw, windows, owner, valid, num_maps = random_case(seed, dtype)
    grid, out_hw = stitched_grid(windows, owner, num_maps)
    fast = stitch_maps(maps, grid_hw, windows, owner, grid, out_hw, valid, combine)
    ref = stitch_maps_reference(maps, grid_hw, windows, owner, grid, out_hw, valid, combine)
    assert torch.equal(fast.coverage, ref.coverage)
    assert int(fast.coverage.max()) >= 2  # the case has overlaps
    # Both paths compute in float64 on the same indices and differ only in the order of the
    # (at most K per cell) window sums and of the N-cell normalising sum: a relative error of
    # (K + N) * 2^-53 before each result is rounded to fp32 (2^-24 each).
    k = int(fast.coverage.max())
    n = int(out_hw.prod(1).max())
    bound = (2 * 2**-24 + (k + n) * 2**-53) * ref.maps.abs() + 1e-45
    assert bool(((fast.maps - ref.maps).abs() <= bound).all())
    assert fast.maps.dtype == torch.float32
    sums = fast.maps.double().sum((1, 2))
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=n * 2**-23, atol=0)


def test_stitch_errors():
    maps, grid_hw, windows, owner, valid, num_maps = random_case(0, torch.float32)
    grid, out_hw = stitched_grid(windows, owner, num_maps)
    for path in PATHS:
        with pytest.raises(ValueError, match="combine must be one of"):
            path(maps, grid_hw, windows, owner, grid, out_hw, valid, "sum")
        with pytest.raises(ValueError, match="one owner, grid_hw and geometry per window"):
            path(maps, grid_hw[1:], windows, owner, grid, out_hw, valid)
        with pytest.raises(ValueError, match="valid must have the maps' shape"):
            path(maps, grid_hw, windows, owner, grid, out_hw, valid[:, :1])
        with pytest.raises(ValueError, match="owner must lie in"):
            path(maps, grid_hw, windows, owner + 5, grid, out_hw, valid)
