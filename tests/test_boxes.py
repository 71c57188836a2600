import pytest
import torch

from focus_modules.functional import propose_rois
from focus_modules.ops.boxes import CellGeometry, cells_to_pixels, image_cell_mask, pixels_to_cells


def test_padded_square_maps_the_image_band_back_to_the_whole_image():
    # LLaVA-1.5: a 600 x 300 image padded to 600 x 600 under a 24 x 24 grid of 25 px cells, 6
    # cells of padding above and below; the same for a portrait image.
    geometry = CellGeometry.padded_square([[600, 300], [300, 600]], [[24, 24], [24, 24]])
    assert geometry.origin.tolist() == [[0, -150], [-150, 0]]
    assert geometry.cell_size.tolist() == [[25, 25], [25, 25]]
    cells = torch.tensor([[[0, 6, 24, 18], [2, 7, 5, 10]], [[6, 0, 18, 24], [6, 0, 7, 1]]], dtype=torch.float32)
    pixels = cells_to_pixels(cells, geometry)
    assert pixels.tolist() == [[[0, 0, 600, 300], [50, 25, 125, 100]], [[0, 0, 300, 600], [0, 0, 25, 25]]]
    assert torch.equal(pixels_to_cells(pixels, geometry), cells)


def test_padded_square_odd_padding_follows_expand2square():
    # expand2square pastes at ((side - width) // 2, ...): 7 px of padding -> 3 before the image.
    geometry = CellGeometry.padded_square([[100, 93]], [[10, 10]])
    assert geometry.origin.tolist() == [[0, -3]]
    assert cells_to_pixels(torch.tensor([[[0.0, 0.0, 10.0, 10.0]]]), geometry).tolist() == [[[0, 0, 100, 93]]]


def test_boxes_are_clipped_to_the_image():
    geometry = CellGeometry.padded_square([[600, 300]], [[24, 24]])
    pixels = cells_to_pixels(torch.tensor([[[0.0, 0.0, 24.0, 24.0], [3.0, 20.0, 8.0, 24.0]]]), geometry)
    assert pixels.tolist() == [[[0, 0, 600, 300], [75, 300, 200, 300]]]  # the second lies in padding: zero area


def test_stretched_grid_with_downsampling():
    # Qwen2.5-VL / OneVision: a 7680 x 3840 image under a grid of h x w = 30 x 60, 128 px per
    # cell (A.3's example); downsampling by 2 gives 256 px cells.
    geometry = CellGeometry.stretched([[7680, 3840]], [[30, 60]], downsample=2)
    assert geometry.cell_size.tolist() == [[256, 256]]
    pixels = cells_to_pixels(torch.tensor([[[0.0, 0.0, 5.0, 5.0], [28.0, 13.0, 30.0, 15.0]]]), geometry)
    assert pixels.tolist() == [[[0, 0, 1280, 1280], [7168, 3328, 7680, 3840]]]
    # a 27 x 81 grid downsampled by 2 has a partial last row/column: clipped to the image
    geometry = CellGeometry.stretched([[810, 270]], [[27, 81]], downsample=2)
    assert cells_to_pixels(torch.tensor([[[39.0, 12.0, 41.0, 14.0]]]), geometry).tolist() == [[[780, 240, 810, 270]]]


def test_round_trip_for_random_boxes_inside_the_image():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[640, 480], [333, 1000], [4000, 3000]])
    grids = torch.tensor([[24, 24], [37, 12], [114, 57]])
    for geometry in (CellGeometry.padded_square(sizes, grids), CellGeometry.stretched(sizes, grids, downsample=3)):
        xy1 = torch.rand(3, 8, 2, generator=gen) * 0.5 * sizes[:, None, :]
        xy2 = xy1 + torch.rand(3, 8, 2, generator=gen) * 0.5 * sizes[:, None, :]
        pixels = torch.cat([xy1, xy2], -1)
        cells = pixels_to_cells(pixels, geometry)
        assert torch.allclose(cells_to_pixels(cells, geometry), pixels, rtol=1e-6, atol=1e-3)
    # RoiSet-like integer cell boxes of a grid that covers the whole image come back exactly
    geometry = CellGeometry.stretched(sizes, grids)
    grid_wh = grids.flip(-1)[:, None, :]
    xy1 = (torch.rand(3, 8, 2, generator=gen) * grid_wh).floor()
    xy2 = xy1 + 1 + (torch.rand(3, 8, 2, generator=gen) * (grid_wh - xy1)).floor().clamp_max(grid_wh - xy1 - 1)
    cells = torch.cat([xy1, xy2], -1)
    assert (cells[..., 2:] <= grid_wh).all()
    assert torch.allclose(pixels_to_cells(cells_to_pixels(cells, geometry), geometry), cells, atol=1e-4)


def test_unbatched_boxes_broadcast_over_one_geometry():
    geometry = CellGeometry.stretched([336, 336], [24, 24])
    assert cells_to_pixels(torch.tensor([[1.0, 2.0, 4.0, 5.0]]), geometry).tolist() == [[14, 28, 56, 70]]


def test_bad_geometry_shapes_raise():
    with pytest.raises(ValueError, match="image_size"):
        CellGeometry.stretched([640, 480, 3], [24, 24])
    with pytest.raises(ValueError, match="grid_hw"):
        CellGeometry.padded_square([[640, 480]], [[24]])


def test_image_cell_mask_marks_padding_rows_and_feeds_propose_rois():
    sizes = [[600, 300], [300, 600], [500, 500]]
    grid = torch.tensor([[24, 24], [24, 24], [20, 22]])
    geometry = CellGeometry.padded_square(sizes, grid)
    mask = image_cell_mask(geometry, grid, 24, 24)
    assert mask.shape == (3, 24, 24)
    assert mask[0].any(1).nonzero().squeeze(1).tolist() == list(range(6, 18)) and mask[0].any(0).all()
    assert mask[1].any(0).nonzero().squeeze(1).tolist() == list(range(6, 18)) and mask[1].any(1).all()
    assert mask[2, :20, :22].all() and not mask[2, 20:].any() and not mask[2, :, 22:].any()

    maps = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    maps[:, :6] += 5.0  # strongest values in the padding above the first image
    rois = propose_rois(maps, grid, 30, 3, 5, 2.0, 0.5, 0.3, valid_mask=mask)
    pixels = cells_to_pixels(rois.boxes, geometry)
    width = (pixels[..., 2] - pixels[..., 0])[rois.valid]
    height = (pixels[..., 3] - pixels[..., 1])[rois.valid]
    assert (width > 0).all() and (height > 0).all()  # no ROI lies in the padding
