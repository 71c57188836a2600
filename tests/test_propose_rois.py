import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from kornia.filters import gaussian_blur2d
from torchvision.ops import box_iou

from focus_modules import FocusConfig, RoiProposer, RoiSet
from focus_modules.functional import propose_rois
from focus_modules.ops.propose_rois import (
    CONSTANT_RTOL,
    NEGLIGIBLE,
    candidate_rois,
    prepare_maps,
    suppress_overlaps,
)

PARAMS = dict(k=30, s_min=3, s_max=5, s_dist=2.0, expand_threshold=0.5, nms_threshold=0.3)


def blob_map(h, w, centres, amplitudes, sigma=1.5, noise=0.05, seed=0):
    """Gaussian blobs at ``centres`` (row, col) on uniform noise, normalised to sum 1 like a
    relevance map."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(h, dtype=torch.float32)[:, None]
    cols = torch.arange(w, dtype=torch.float32)[None, :]
    m = noise * torch.rand(h, w, generator=gen)
    for (cy, cx), amplitude in zip(centres, amplitudes):
        m += amplitude * torch.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * sigma**2))
    return m / m.sum()


def pad_batch(maps, fill=0.0):
    """Stack ``[h_i, w_i]`` maps into ``[B, Hmax, Wmax]`` (``fill`` outside each grid) and grid_hw."""
    h_max = max(m.shape[0] for m in maps)
    w_max = max(m.shape[1] for m in maps)
    batch = torch.full((len(maps), h_max, w_max), fill, dtype=maps[0].dtype)
    for b, m in enumerate(maps):
        batch[b, : m.shape[0], : m.shape[1]] = m
    return batch, torch.tensor([list(m.shape) for m in maps])


def contains(box, x, y):
    x1, y1, x2, y2 = box.tolist()
    return x1 <= x < x2 and y1 <= y < y2


def iou(a, b):
    """IoU of two integer xyxy boxes (float64: exact enough to compare with a decimal threshold)."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def oracle_rois(m, valid, k, s_min, s_max, s_dist, expand_threshold, nms_threshold):
    """Cell-by-cell Python transcription of the algorithm for one unsmoothed ``[h, w]`` float32
    map: list of ``(box, score, anchor_xy)``, best first."""
    h, w = m.shape
    cells = [(r, c) for r in range(h) for c in range(w) if valid[r, c]]
    if not cells:
        return []
    scale = torch.stack([m[r, c].abs() for r, c in cells]).max()
    m = m / (scale if scale > 0 else 1.0)
    m = torch.where(m.abs() < NEGLIGIBLE, 0.0, m)
    vals = torch.stack([m[r, c] for r, c in cells])
    low, high = vals.min(), vals.max()
    if high - low > CONSTANT_RTOL * max(abs(high), abs(low)):
        norm = torch.where(valid, (m - low) / (high - low), 0.0)
    else:
        norm = torch.zeros_like(m)
    order = sorted(cells, key=lambda rc: (-float(norm[rc]), rc))  # ties: row-major
    anchors = []
    for r, c in order:
        if len(anchors) == k:
            break
        if all((r - ar) ** 2 + (c - ac) ** 2 >= s_dist**2 for ar, ac in anchors):
            anchors.append((r, c))
    top, bottom = min(r for r, _ in cells), max(r for r, _ in cells) + 1
    left, right = min(c for _, c in cells), max(c for _, c in cells) + 1

    def interval(centre, size, lo, hi):
        start = max(min(centre - (size - 1) // 2, hi - size), lo)
        return start, min(start + size, hi)

    rois = []
    for r, c in anchors:
        score = float(norm[r, c])
        for size in range(s_min, s_max + 1):
            y1, y2 = interval(r, size, top, bottom)
            x1, x2 = interval(c, size, left, right)
            mean = float(norm[y1:y2, x1:x2].double().mean())
            if size > s_min and mean < expand_threshold * score:
                break
            box = (x1, y1, x2, y2)
        rois.append((box, score, (c, r)))
    kept = []
    for roi in rois:
        if all(iou(roi[0], other[0]) <= nms_threshold for other in kept):
            kept.append(roi)
    return kept


def assert_valid_roiset(rois, k):
    assert isinstance(rois, RoiSet)
    batch = rois.valid.shape[0]
    assert rois.boxes.shape == (batch, k, 4) and rois.boxes.dtype == torch.float32
    assert rois.scores.shape == (batch, k) and rois.anchors.shape == (batch, k, 2)
    assert rois.cell_hw.shape == (batch, 2) and rois.cell_hw.dtype == torch.long
    assert torch.isfinite(rois.boxes).all() and torch.isfinite(rois.scores).all()
    # padding only after the valid entries, scores descending
    assert not (rois.valid[:, 1:] & ~rois.valid[:, :-1]).any()
    assert (rois.scores[:, 1:] <= rois.scores[:, :-1]).all()
    for b in range(batch):
        h, w = rois.cell_hw[b].tolist()
        boxes = rois.boxes[b][rois.valid[b]]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (rois.boxes[b][~rois.valid[b]] == 0).all()


@pytest.mark.parametrize(
    "h, w, centres",
    [
        (24, 24, [(5, 17), (18, 4), (12, 12)]),
        (60, 30, [(41, 9), (8, 22), (30, 15)]),
        (27, 81, [(20, 70), (3, 5), (13, 40)]),
    ],
)
def test_planted_blobs(h, w, centres):
    m = blob_map(h, w, centres, amplitudes=[1.0, 0.6, 0.35])
    rois = propose_rois(m[None], torch.tensor([[h, w]]), **PARAMS)
    assert_valid_roiset(rois, PARAMS["k"])
    valid = rois.valid[0]
    boxes, anchors = rois.boxes[0][valid], rois.anchors[0][valid]
    assert len(boxes) > 3
    (cy, cx), (cy2, cx2) = centres[0], centres[1]
    assert contains(boxes[0], cx, cy)
    assert tuple(anchors[0].tolist()) == (cx, cy)
    assert rois.scores[0, 0] == 1.0
    assert any(contains(box, cx2, cy2) for box in boxes[:3])
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    assert ((sides >= PARAMS["s_min"]) & (sides <= PARAMS["s_max"])).all()
    assert (sides[0] == sides[1]).all()  # squares: the maps are larger than s_max
    iou = box_iou(boxes, boxes) - 2 * torch.eye(len(boxes))
    assert iou.max() <= PARAMS["nms_threshold"]
    dist = torch.cdist(anchors.float(), anchors.float()) + 1e9 * torch.eye(len(anchors))
    assert dist.min() >= PARAMS["s_dist"]
    # the blob ROI grows past s_min, a noise ROI does not
    assert (sides[:, 0] > PARAMS["s_min"]).all()


@pytest.mark.parametrize("smoothing", [dict(), dict(smooth_sigma=1.0, downsample=2)])
def test_results_do_not_depend_on_the_maps_scale(smoothing):
    m = blob_map(60, 30, [(41, 9), (8, 22)], [1.0, 0.6])[None]
    grid = torch.tensor([[60, 30]])
    want = propose_rois(m, grid, **PARAMS, **smoothing)
    for factor in (2.0**-100, 2.0**60):  # exact in float32, 2**-100 puts the map near subnormals
        got = propose_rois(m * factor, grid, **PARAMS, **smoothing)
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def handmade_roiset(boxes, device="cpu"):
    boxes = torch.tensor([boxes], dtype=torch.float32, device=device)
    k = boxes.shape[1]
    return RoiSet(
        boxes=boxes,
        scores=torch.linspace(1, 0.5, k, device=device)[None],
        valid=torch.ones(1, k, dtype=torch.bool, device=device),
        cell_hw=torch.tensor([[20, 20]], device=device),
        anchors=torch.zeros(1, k, 2, dtype=torch.long, device=device),
    )


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_nms_keeps_an_iou_exactly_at_the_threshold(device):
    # 6 x 6 and 4 x 4 overlapping in 3 x 4 cells: IoU = 12 / 40 = 0.3 exactly; the third box
    # overlaps the first with IoU 16 / 36 > 0.3.
    rois = handmade_roiset([[0, 0, 6, 6], [3, 2, 7, 6], [1, 1, 5, 5]], device)
    kept = suppress_overlaps(rois, 0.3)
    assert kept.valid[0].tolist() == [True, True, False]
    assert kept.boxes[0, :2].tolist() == [[0, 0, 6, 6], [3, 2, 7, 6]] and (kept.boxes[0, 2] == 0).all()
    assert kept.scores[0].tolist() == [1.0, 0.75, 0.0]
    assert suppress_overlaps(rois, 0.29).valid[0].tolist() == [True, False, False]


def test_candidates_hold_k_spread_anchors_and_nms_keeps_a_subset():
    m = blob_map(60, 30, [(41, 9)], [1.0])
    grid = torch.tensor([[60, 30]])
    cand = candidate_rois(m[None], grid, 30, 3, 5, 2.0, 0.5)
    assert cand.valid.all()  # k anchors, not "top-k cells minus the close ones"
    anchors = cand.anchors[0].float()
    dist = torch.cdist(anchors, anchors) + 1e9 * torch.eye(30)
    assert dist.min() >= 2.0
    final = propose_rois(m[None], grid, 30, 3, 5, 2.0, 0.5, 0.3)
    kept = {tuple(a) for a in final.anchors[0][final.valid[0]].tolist()}
    assert kept < {tuple(a) for a in cand.anchors[0].tolist()}


@pytest.mark.parametrize("seed", range(6))
def test_matches_cell_by_cell_oracle(seed):
    gen = torch.Generator().manual_seed(seed)
    params = [
        dict(k=30, s_min=3, s_max=5, s_dist=2.0, expand_threshold=0.5, nms_threshold=0.3),
        dict(k=15, s_min=3, s_max=5, s_dist=3.0, expand_threshold=0.5, nms_threshold=0.3),
        dict(k=12, s_min=2, s_max=6, s_dist=1.5, expand_threshold=0.7, nms_threshold=0.5),
        dict(k=40, s_min=1, s_max=4, s_dist=0.0, expand_threshold=0.3, nms_threshold=0.0),
        dict(k=8, s_min=4, s_max=9, s_dist=2.5, expand_threshold=0.6, nms_threshold=0.7),
        dict(k=20, s_min=3, s_max=9, s_dist=2.0, expand_threshold=0.4, nms_threshold=0.3),
    ][seed]
    maps, masks = [], []
    for i in range(5):
        h, w = (int(x) for x in torch.randint(1, 21, (2,), generator=gen))
        if i == 0:
            m = torch.randint(0, 3, (h, w), generator=gen).float()  # many ties
        else:
            m = torch.rand(h, w, generator=gen) ** 3
        mask = torch.rand(h, w, generator=gen) > 0.2 if i % 2 else torch.ones(h, w, dtype=torch.bool)
        maps.append(m)
        masks.append(mask)
    batch, grid = pad_batch(maps)
    valid_mask, _ = pad_batch([mk.float() for mk in masks])
    rois = propose_rois(batch, grid, valid_mask=valid_mask.bool(), **params)
    assert_valid_roiset(rois, params["k"])
    for b, (m, mask) in enumerate(zip(maps, masks)):
        expected = oracle_rois(m, mask, **params)
        n = int(rois.valid[b].sum())
        assert n == len(expected)
        assert rois.boxes[b, :n].long().tolist() == [list(e[0]) for e in expected]
        assert rois.anchors[b, :n].tolist() == [list(e[2]) for e in expected]
        assert torch.allclose(rois.scores[b, :n], torch.tensor([e[1] for e in expected]))


@pytest.mark.parametrize(
    "smoothing", [dict(), dict(smooth_sigma=1.0, downsample=2), dict(smooth_sigma=1.5, downsample=3)]
)
def test_batch_of_different_sizes_equals_each_map_alone(smoothing):
    maps = [
        blob_map(24, 24, [(5, 17), (18, 4)], [1.0, 0.5], seed=1),
        blob_map(60, 30, [(41, 9), (59, 0)], [1.0, 0.8], seed=2),
        blob_map(27, 81, [(0, 80), (13, 40)], [1.0, 0.7], seed=3),
        blob_map(2, 5, [(1, 4)], [1.0], seed=4),
    ]
    # Garbage outside the grids must not matter either.
    batch, grid = pad_batch(maps, fill=5.0)
    together = propose_rois(batch, grid, **PARAMS, **smoothing)
    assert_valid_roiset(together, PARAMS["k"])
    for b, m in enumerate(maps):
        alone = propose_rois(m[None], grid[b : b + 1], **PARAMS, **smoothing)
        assert torch.equal(together.valid[b], alone.valid[0])
        assert torch.equal(together.boxes[b], alone.boxes[0])
        assert torch.equal(together.anchors[b], alone.anchors[0])
        assert torch.equal(together.cell_hw[b], alone.cell_hw[0])
        assert torch.allclose(together.scores[b], alone.scores[0], atol=1e-6)


def test_smoothing_is_a_gaussian_of_the_given_sigma():
    one_hot = torch.zeros(1, 25, 25)
    one_hot[0, 12, 12] = 1.0
    sigma = 1.3
    relevance, valid, cell_hw = prepare_maps(one_hot, torch.tensor([[25, 25]]), smooth_sigma=sigma)
    offsets = torch.arange(-3, 4, dtype=torch.float32)
    expected = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    assert torch.allclose(relevance[0, 9:16, 9:16], expected, atol=1e-5)
    assert valid.all() and cell_hw.tolist() == [[25, 25]]


@pytest.mark.parametrize("h, w", [(9, 13), (2, 5), (1, 1)])
def test_smoothing_reflects_each_map_symmetrically_at_its_border(h, w):
    gen = torch.Generator().manual_seed(h)
    m = torch.rand(h, w, generator=gen, dtype=torch.float64)
    sigma, radius = 1.0, 3
    padded = torch.from_numpy(np.pad(m.numpy(), radius, mode="symmetric"))  # scipy.ndimage's "reflect"
    want = gaussian_blur2d(padded[None, None], 2 * radius + 1, (sigma, sigma))[0, 0, radius:-radius, radius:-radius]
    if h * w > 1:
        want = (want - want.min()) / (want.max() - want.min())
    else:
        want = torch.zeros_like(want)
    batch, grid = pad_batch([m, torch.rand(14, 15, generator=gen, dtype=torch.float64)], fill=7.0)
    relevance, _, _ = prepare_maps(batch, grid, smooth_sigma=sigma)
    assert torch.allclose(relevance[0, :h, :w], want, atol=1e-12)
    assert (relevance[0, h:] == 0).all() and (relevance[0, :, w:] == 0).all()


@pytest.mark.parametrize("downsample", [1, 2, 3])
@pytest.mark.parametrize("peak", [(0, 0), (26, 80), (13, 41), (26, 0), (5, 79)])
def test_smoothing_and_downsampling_keep_a_one_hot_peak(peak, downsample):
    one_hot = torch.zeros(1, 27, 81)
    one_hot[0, peak[0], peak[1]] = 1.0
    rois = propose_rois(one_hot, torch.tensor([[27, 81]]), **PARAMS, smooth_sigma=1.0, downsample=downsample)
    assert_valid_roiset(rois, PARAMS["k"])
    assert rois.cell_hw.tolist() == [[math.ceil(27 / downsample), math.ceil(81 / downsample)]]
    assert rois.anchors[0, 0].tolist() == [peak[1] // downsample, peak[0] // downsample]
    assert contains(rois.boxes[0, 0], peak[1] // downsample, peak[0] // downsample)


def test_valid_mask_keeps_anchors_and_boxes_off_padding():
    # LLaVA-1.5-like: a 2:1 image padded to a square, rows 0-5 and 18-23 are padding, and the
    # padding holds the strongest values (as spurious high-activation tokens can).
    m = blob_map(24, 24, [(2, 5), (21, 20), (10, 8)], [3.0, 3.0, 1.0])
    mask = torch.zeros(1, 24, 24, dtype=torch.bool)
    mask[0, 6:18] = True
    for smoothing in (dict(), dict(smooth_sigma=1.0, downsample=2)):
        rois = propose_rois(m[None], torch.tensor([[24, 24]]), valid_mask=mask, **PARAMS, **smoothing)
        assert_valid_roiset(rois, PARAMS["k"])
        d = smoothing.get("downsample", 1)
        valid = rois.valid[0]
        assert valid.sum() > 0
        anchors_y = rois.anchors[0][valid][:, 1]
        assert (anchors_y >= 6 // d).all() and (anchors_y < 18 // d).all()
        boxes = rois.boxes[0][valid]
        assert (boxes[:, 1] >= 6 // d).all() and (boxes[:, 3] <= 18 // d).all()
        assert contains(rois.boxes[0, 0], 8 // d, 10 // d)
    unmasked = propose_rois(m[None], torch.tensor([[24, 24]]), **PARAMS)
    assert unmasked.anchors[0, 0, 1] < 6 or unmasked.anchors[0, 0, 1] >= 18  # the mask did something


@pytest.mark.parametrize("smoothing", [dict(), dict(smooth_sigma=1.0, downsample=2)])
@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (5, 2), (24, 24)])
@pytest.mark.parametrize("fill", [0.0, 0.25, 1e-30])
def test_constant_and_tiny_maps_give_finite_rois(shape, fill, smoothing):
    h, w = shape
    rois = propose_rois(torch.full((1, h, w), fill), torch.tensor([[h, w]]), **PARAMS, **smoothing)
    assert_valid_roiset(rois, PARAMS["k"])
    assert rois.valid[0, 0] and (rois.scores == 0).all()
    ch, cw = rois.cell_hw[0].tolist()
    # first cell in row-major order, grown to s_max and clamped to the map
    assert rois.anchors[0, 0].tolist() == [0, 0]
    assert rois.boxes[0, 0].tolist() == [0, 0, min(5, cw), min(5, ch)]


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (3, 7)])
def test_tiny_varying_maps(shape):
    h, w = shape
    m = torch.arange(h * w, dtype=torch.float32).view(1, h, w)
    rois = propose_rois(m, torch.tensor([[h, w]]), **PARAMS)
    assert_valid_roiset(rois, PARAMS["k"])
    assert rois.anchors[0, 0].tolist() == [w - 1, h - 1]  # the largest value is the last cell


def test_map_without_valid_cells_gives_only_padding():
    maps = torch.rand(2, 6, 6)
    mask = torch.ones(2, 6, 6, dtype=torch.bool)
    mask[1] = False
    rois = propose_rois(maps, torch.tensor([[6, 6], [6, 6]]), valid_mask=mask, **PARAMS, smooth_sigma=1.0)
    assert_valid_roiset(rois, PARAMS["k"])
    assert rois.valid[0].any() and not rois.valid[1].any()
    assert (rois.boxes[1] == 0).all() and (rois.scores[1] == 0).all()


def test_bad_inputs_raise():
    maps = torch.rand(2, 6, 7)
    grid = torch.tensor([[6, 7], [4, 4]])
    call = lambda **kw: propose_rois(**{**dict(maps=maps, grid_hw=grid, **PARAMS), **kw})  # noqa: E731
    call()
    with pytest.raises(ValueError, match="Hmax"):
        call(grid_hw=torch.tensor([[6, 7], [7, 4]]))
    with pytest.raises(ValueError, match="grid_hw"):
        call(grid_hw=torch.tensor([[6, 7], [0, 4]]))
    with pytest.raises(ValueError, match=r"\[B=2, 2\]"):
        call(grid_hw=torch.tensor([[6, 7]]))
    with pytest.raises(ValueError, match="Wmax"):
        call(maps=torch.rand(2, 6))
    nan_maps = maps.clone()
    nan_maps[1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="map 1 has NaN"):
        call(maps=nan_maps)
    nan_maps[1, 2, 3] = 0.0
    nan_maps[1, 5, 6] = math.nan  # outside map 1's 4 x 4 grid: ignored
    call(maps=nan_maps)
    with pytest.raises(ValueError, match="valid_mask"):
        call(valid_mask=torch.ones(2, 6, 7))
    for bad in (
        dict(k=0),
        dict(s_min=6, s_max=5),
        dict(s_min=0),
        dict(s_dist=-1.0),
        dict(nms_threshold=1.5),
        dict(smooth_sigma=0.0),
        dict(downsample=0),
        dict(k=2.5),
        dict(expand_threshold=math.nan),
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            call(**bad)


def test_roi_proposer_stores_config_and_delegates():
    cfg = FocusConfig.preset("llava-onevision", dataset="vstar")
    proposer = RoiProposer.from_config(cfg)
    assert (proposer.k, proposer.s_min, proposer.s_max, proposer.s_dist) == (cfg.k, cfg.s_min, 9, cfg.s_dist)
    assert (proposer.smooth_sigma, proposer.downsample) == (cfg.smooth_sigma, cfg.downsample)
    assert (proposer.expand_threshold, proposer.nms_threshold) == (0.5, 0.3)
    assert "s_max=9" in repr(proposer)
    maps, grid = pad_batch([blob_map(60, 30, [(41, 9)], [1.0]), blob_map(24, 24, [(5, 17)], [1.0])])
    mask = torch.rand(maps.shape, generator=torch.Generator().manual_seed(0)) > 0.1
    got = proposer(maps, grid, mask)
    want = propose_rois(
        maps,
        grid,
        cfg.k,
        cfg.s_min,
        cfg.s_max,
        cfg.s_dist,
        cfg.expand_threshold,
        cfg.nms_threshold,
        cfg.smooth_sigma,
        cfg.downsample,
        valid_mask=mask,
    )
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    default = RoiProposer()
    assert (default.k, default.s_min, default.s_max, default.s_dist, default.smooth_sigma, default.downsample) == (
        30,
        3,
        5,
        2,
        None,
        1,
    )


def compile_inputs(shapes):
    maps, grid = pad_batch([blob_map(h, w, [(h // 3, w // 4), (h - 2, w - 3)], [1.0, 0.6], seed=h) for h, w in shapes])
    return maps, grid, torch.rand(maps.shape, generator=torch.Generator().manual_seed(1)) > 0.05


def test_candidate_rois_compiles_to_eager_results():
    params = dict(k=30, s_min=3, s_max=5, s_dist=2.0, expand_threshold=0.5)
    maps, grid, mask = compile_inputs([(24, 24), (20, 24)])
    eager = candidate_rois(maps, grid, valid_mask=mask, **params)
    compiled = torch.compile(candidate_rois, backend="aot_eager", fullgraph=True)(maps, grid, valid_mask=mask, **params)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


def test_candidate_rois_compiles_with_inductor():
    """Inductor (compile ~30 s on 2 CPU cores) on the global-local settings: smoothing and
    downsampling included."""
    torch._dynamo.reset()
    params = dict(k=30, s_min=3, s_max=9, s_dist=2.0, expand_threshold=0.5, smooth_sigma=1.0, downsample=2)
    maps, grid, mask = compile_inputs([(60, 30), (27, 81)])
    start = time.perf_counter()
    compiled = torch.compile(candidate_rois, fullgraph=True)(maps, grid, valid_mask=mask, **params)
    print(f"inductor compile + run: {time.perf_counter() - start:.1f} s")
    eager = candidate_rois(maps, grid, valid_mask=mask, **params)
    assert torch.equal(eager.valid, compiled.valid) and torch.equal(eager.boxes, compiled.boxes)
    assert torch.equal(eager.anchors, compiled.anchors) and torch.equal(eager.cell_hw, compiled.cell_hw)
    assert torch.allclose(eager.scores, compiled.scores, atol=1e-6)


# Compiled smoothing against eager in a fresh process whose inductor emits code for one CPU
# instruction set (ATEN_CPU_CAPABILITY is read at import), so an AVX-512 machine also checks
# the AVX2 and scalar code other CI machines run.
SMOOTH_UNDER_CAPABILITY = """
import torch
from focus_modules.ops.propose_rois import smooth, symmetric_index
grid = torch.tensor([[60, 30], [27, 81]])
planes = torch.rand(2, 2, 60, 81, generator=torch.Generator().manual_seed(0))
index = lambda size: symmetric_index(81, 3, size)
assert torch.equal(torch.compile(index, fullgraph=True)(grid[:, 1]), index(grid[:, 1])), "symmetric_index"
eager, compiled = smooth(planes, grid, 1.0), torch.compile(smooth, fullgraph=True)(planes, grid, 1.0)
taps = 7 * 7  # kernel 2 * ceil(3 sigma) + 1 per side; inputs in [0, 1], weights sum to 1
for b, (h, w) in enumerate(grid.tolist()):
    error = (eager[b, :, :h, :w] - compiled[b, :, :h, :w]).abs().max().item()
    assert error <= taps * torch.finfo(torch.float32).eps, f"smooth, image {b}: {error}"
"""


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_compiled_smoothing_matches_eager_for_each_cpu_instruction_set(capability, tmp_path):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", SMOOTH_UNDER_CAPABILITY], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("smoothing", [dict(), dict(smooth_sigma=1.0, downsample=2)])
def test_cuda_matches_cpu(smoothing):
    maps, grid = pad_batch(
        [
            blob_map(h, w, [(h // 3, w // 4), (h - 2, w - 3)], [1.0, 0.6], seed=h)
            for h, w in [(24, 24), (60, 30), (27, 81), (114, 57), (2, 5)]
        ]
    )
    mask = torch.rand(maps.shape, generator=torch.Generator().manual_seed(1)) > 0.05
    cpu = propose_rois(maps, grid, valid_mask=mask, **PARAMS, **smoothing)
    cuda = propose_rois(maps.cuda(), grid.cuda(), valid_mask=mask.cuda(), **PARAMS, **smoothing)
    assert torch.equal(cpu.valid, cuda.valid.cpu()) and torch.equal(cpu.boxes, cuda.boxes.cpu())
    assert torch.equal(cpu.anchors, cuda.anchors.cpu()) and torch.equal(cpu.cell_hw, cuda.cell_hw.cpu())
    assert torch.allclose(cpu.scores, cuda.scores.cpu(), atol=1e-5)
