"""The wrapper's control flow on a scripted model: the relevance maps and the Yes/No logits
are chosen by the test, so every decision of steps IV-VI is known in advance."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from focus_modules import FocusConfig, FocusWrapper
from focus_modules.adapters import Encoding, ModelAdapter
from focus_modules.ops.boxes import CellGeometry

GRID = 12
CELL = 16  # pixels per map cell; the map covers the whole image
SIZE = GRID * CELL
YES, NO = 5, 6
BOS, ASK, TARGETS, ANSWER, VISUAL = 0, 1, 2, 3, 4
TARGET_ID = {"cat": 10, "dog": 11, "birds": 12}


def coordinate_image():
    """R = x, G = y, so a crop's first pixel tells where it was cut."""
    x, y = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


class ScriptedModel(nn.Module):
    """Values: the target token is (1, 0), visual token j is (m_j, sqrt(1 - m_j^2)), so the
    relevance map is proportional to the scripted map m of that target. Logits: a crop whose
    top-left lies in cell (row, col) answers with the scripted confidence of that cell."""

    def __init__(self, maps: dict[str, np.ndarray], confidence: dict[tuple[int, int], float]):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # device and dtype of the "model"
        layer = nn.Module()
        layer.self_attn = nn.Module()
        layer.self_attn.head_dim = 2
        layer.self_attn.v_proj = nn.Identity()
        self.model = nn.Module()
        self.model.language_model = nn.Module()
        self.model.language_model.layers = nn.ModuleList([layer])
        self.maps = {TARGET_ID[t]: torch.tensor(m, dtype=torch.float32).flatten() for t, m in maps.items()}
        self.confidence = confidence
        self.verified = []  # (target, cell) of every crop scored, in order

    def forward(self, input_ids, attention_mask, pixel_values, **kwargs):
        hidden = torch.zeros(*input_ids.shape, 2)
        logits = torch.zeros(*input_ids.shape, 8)
        for row, ids in enumerate(input_ids):
            target = int(ids[-2])
            hidden[row, -2] = torch.tensor([1.0, 0.0])
            visual = (ids == VISUAL).nonzero().flatten()
            m = self.maps[target]
            hidden[row, visual] = torch.stack([m, (1 - m**2).sqrt()], -1)
            x, y, w, h = pixel_values[row].tolist()
            if (w, h) != (SIZE, SIZE):  # an ROI crop: step V
                cell = (int(y) // CELL, int(x) // CELL)
                self.verified.append((target, cell))
                c = self.confidence.get(cell, -0.99)  # unscripted ROIs answer "No"
                logits[row, -1, YES] = 2 * math.atanh(c)
        self.model.language_model.layers[0].self_attn.v_proj(hidden)
        return SimpleNamespace(logits=logits)


class ScriptedAdapter(ModelAdapter):
    family = "llava-1.5"

    def __init__(self, model, target_reply="cat"):
        super().__init__(model, processor=None)
        self.target_reply = target_reply
        self.views = []

    def decoder_layers(self):
        return self.model.model.language_model.layers

    def yes_no_ids(self):
        return [YES], [NO]

    @property
    def pad_token_id(self):
        return 7

    @property
    def background_color(self):
        return (255, 255, 255)

    def encode_text(self, text):
        return Encoding(torch.tensor([BOS, TARGETS]))

    def encode_existence(self, image, target):
        x, y = np.asarray(image)[0, 0, :2].tolist()
        ids = [BOS] + [VISUAL] * GRID * GRID + [ASK, TARGET_ID[target], ASK]
        n = len(ids)
        return Encoding(
            torch.tensor(ids),
            {"pixel_values": torch.tensor([[x, y, *image.size]], dtype=torch.float32)},
            target_positions=torch.tensor([n - 2]),
            visual_positions=torch.arange(1, 1 + GRID * GRID),
            grid_hw=(GRID, GRID),
            valid_cells=torch.ones(GRID, GRID, dtype=torch.bool),
            geometry=CellGeometry(*(f[0] for f in CellGeometry.stretched([[SIZE, SIZE]], [[GRID, GRID]]))),
        )

    def encode_answer(self, view, question, options):
        self.views.append(view)
        return Encoding(torch.tensor([BOS, ANSWER]))

    def generate(self, batch, max_new_tokens):
        kinds = batch.inputs["input_ids"][:, -1].tolist()
        return [self.target_reply if k == TARGETS else "A" for k in kinds]


def peaks(*cells):
    """A map with the given cells' relevance decreasing in the order given, 0 elsewhere."""
    m = np.zeros((GRID, GRID))
    for rank, (row, col) in enumerate(cells):
        m[row, col] = 0.9 - 0.1 * rank
    return m


def cell_box(row, col):
    """Pixel box of the 3x3 ROI centred on a cell (s_min = s_max = 3)."""
    return (float((col - 1) * CELL), float((row - 1) * CELL), float((col + 2) * CELL), float((row + 2) * CELL))


PEAKS = [(2, 2), (2, 8), (8, 2), (8, 8)]  # relevance order A > B > C > D, far apart


def run(maps, confidence, targets, target_reply="cat", question="What is the color of the cat?", **cfg):
    cfg.setdefault("k", len(PEAKS))
    config = FocusConfig.preset("llava-1.5", layers=(0, 1), s_min=3, s_max=3, **cfg)
    model = ScriptedModel(maps, confidence)
    adapter = ScriptedAdapter(model, target_reply)
    # the scripted model reads each prompt whole (no KV cache): one full pass per target
    wrapper = FocusWrapper(model, None, config, adapter=adapter, reuse_prefix=False)
    [result] = wrapper.answer([coordinate_image()], [question], targets=targets)
    return result, model, adapter


def corner_cell(row, col):
    return (row - 1, col - 1)  # the crop of the ROI centred on (row, col) starts there


def test_proposals_follow_the_scripted_map():
    result, _, _ = run({"cat": peaks(*PEAKS)}, {}, [["cat"]], n_steps=0)
    assert [r.box for r in result.rois[0]] == [cell_box(*p) for p in PEAKS]
    assert result.forward_passes == {"targets": 0, "relevance": 1, "verify": 0, "answer": 1}
    assert result.final_view == "crop" and result.final_boxes == [cell_box(*PEAKS[0])]
    m = result.relevance_maps[0]
    assert m.shape == (GRID, GRID) and torch.isclose(m.sum(), torch.tensor(1.0))


def test_overrun_stops_at_the_first_yes():
    no, yes = -0.5, 0.4
    confidence = {
        corner_cell(*PEAKS[0]): no,
        corner_cell(*PEAKS[1]): no,
        corner_cell(*PEAKS[2]): yes,
        corner_cell(*PEAKS[3]): 0.9,
    }
    result, model, adapter = run({"cat": peaks(*PEAKS)}, confidence, [["cat"]], n_steps=1)
    # A (No) in the first round, then B (No), then C (Yes): D is never asked.
    assert [cell for _, cell in model.verified] == [corner_cell(*p) for p in PEAKS[:3]]
    assert result.forward_passes["verify"] == 3
    assert [r.box for r in result.rois[0]] == [cell_box(*p) for p in (PEAKS[2], PEAKS[0], PEAKS[1], PEAKS[3])]
    assert [r.confidence for r in result.rois[0][:3]] == pytest.approx([yes, no, no])
    assert result.rois[0][3].confidence is None
    assert adapter.views[0].kind == "crop" and adapter.views[0].boxes == [cell_box(*PEAKS[2])]

    # Without overrun: one step, the best verified ROI is A even though it answered No.
    result, model, _ = run({"cat": peaks(*PEAKS)}, confidence, [["cat"]], n_steps=1, overrun=False)
    assert result.forward_passes["verify"] == 1 and result.final_boxes == [cell_box(*PEAKS[0])]
    # A Yes within the first n_steps: no overrun round.
    confidence[corner_cell(*PEAKS[1])] = 0.2
    result, model, _ = run({"cat": peaks(*PEAKS)}, confidence, [["cat"]], n_steps=2)
    assert result.forward_passes["verify"] == 2 and result.final_boxes == [cell_box(*PEAKS[1])]
    # Every ROI says No: overrun verifies them all and keeps the least negative.
    all_no = {corner_cell(*p): c for p, c in zip(PEAKS, (-0.9, -0.8, -0.1, -0.7))}
    result, model, _ = run({"cat": peaks(*PEAKS)}, all_no, [["cat"]], n_steps=2)
    assert result.forward_passes["verify"] == 4 and result.final_boxes == [cell_box(*PEAKS[2])]


def test_type2_keeps_every_roi_above_the_threshold_and_merges_overlaps():
    # The model names "all birds"; two ROIs overlap (anchors 2 cells apart).
    cells = [(2, 2), (2, 4), (9, 9), (6, 9)]
    confidence = {
        corner_cell(*cells[0]): 0.9,
        corner_cell(*cells[1]): 0.7,
        corner_cell(*cells[2]): 0.65,
        corner_cell(*cells[3]): 0.3,
    }
    result, model, adapter = run(
        {"birds": peaks(*cells)},
        confidence,
        None,
        target_reply="all birds",
        question="How many birds are on the roof?",
        n_steps=1,
        t_type2=0.6,
        s_dist=2,
    )
    assert result.targets == ["birds"] and result.question_type == 2 and result.target_source == "model"
    # Type 2 is not limited by n_steps: every proposal is verified.
    assert result.forward_passes == {"targets": 1, "relevance": 1, "verify": 4, "answer": 1}
    view = adapter.views[0]
    assert view.kind == "canvas"
    merged = (cell_box(*cells[0])[0], cell_box(*cells[0])[1], cell_box(*cells[1])[2], cell_box(*cells[1])[3])
    assert view.boxes == [merged, cell_box(*cells[2])]  # 0.3 is below t_type2 = 0.6
    assert view.images[0].size[0] < SIZE and view.images[0].size[1] < SIZE
    # Nothing above the threshold: the whole image.
    result, _, adapter = run(
        {"birds": peaks(*cells)},
        dict.fromkeys(confidence, 0.5),
        None,
        target_reply="all birds",
        question="How many birds are on the roof?",
        t_type2=0.6,
    )
    assert adapter.views[0].kind == "image" and result.final_boxes == []


@pytest.mark.parametrize("t_obj_dist, kind", [(1000.0, "union"), (100.0, "canvas")])
def test_two_targets_union_or_canvas_by_t_obj_dist(t_obj_dist, kind):
    cat, dog = (2, 2), (9, 9)  # centres (9 * 16) * sqrt(2) ~ 204 px apart
    maps = {"cat": peaks(cat, (6, 6)), "dog": peaks(dog, (6, 2))}
    confidence = {corner_cell(*cat): 0.8, corner_cell(6, 6): -0.2, corner_cell(*dog): 0.7, corner_cell(6, 2): 0.1}
    result, model, adapter = run(maps, confidence, [["cat", "dog"]], n_steps=2, k=2, t_obj_dist=t_obj_dist)
    assert result.forward_passes == {"targets": 0, "relevance": 2, "verify": 4, "answer": 1}
    view = adapter.views[0]
    assert view.kind == kind == result.final_view
    if kind == "union":
        assert view.boxes == [(cell_box(*cat)[0], cell_box(*cat)[1], cell_box(*dog)[2], cell_box(*dog)[3])]
        assert view.images[0].size == (10 * CELL, 10 * CELL)
    else:
        assert view.boxes == [cell_box(*cat), cell_box(*dog)]
        assert view.images[0].size[0] < 10 * CELL


def test_no_target_found_falls_back_to_the_whole_image():
    result, model, adapter = run({"cat": peaks(*PEAKS)}, {}, None, target_reply="nonsense words")
    # The reply names nothing from the question; the keyword fallback finds "cat".
    assert result.target_source == "keywords" and result.targets == ["cat"]
    result, model, adapter = run({"cat": peaks(*PEAKS)}, {}, [[]])
    assert result.targets == [] and result.target_source == "none" and result.final_view == "image"
    assert result.forward_passes == {"targets": 0, "relevance": 0, "verify": 0, "answer": 1}
    assert result.answer == "A"
