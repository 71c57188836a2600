import pytest

from focus_modules.eval import box_coverage, lenient_letter, roi_hits, strict_letter, summarize


@pytest.mark.parametrize(
    "answer, strict, lenient",
    [
        ("B", "B", "B"),
        (" B\n", "B", "B"),
        ("(B)", None, "B"),
        ("The answer is B.", None, "B"),
        ("B. red", None, "B"),
        ("Blue", None, None),  # B inside a word is no letter
        ("E", None, None),  # not an option letter of a 4-option question
        ("", None, None),
        (None, None, None),
        ("I think (C), not (A)", None, "C"),
    ],
)
def test_strict_and_lenient_letters(answer, strict, lenient):
    assert strict_letter(answer, "ABCD") == strict
    assert lenient_letter(answer, "ABCD") == lenient


def test_box_coverage_and_roi_hits():
    gt = (10, 10, 20, 20)
    assert box_coverage((0, 0, 100, 100), gt) == 1.0
    assert box_coverage((15, 10, 40, 40), gt) == 0.5
    assert box_coverage((16, 10, 40, 40), gt) == pytest.approx(0.4)
    assert box_coverage((30, 30, 40, 40), gt) == 0.0
    rois = [[{"box": (30, 30, 40, 40)}, {"box": (15, 10, 40, 40)}], [{"box": (0, 0, 5, 5)}]]
    # the second ROI of target 0 covers half of the first GT box; nothing covers the second
    assert roi_hits(rois, [gt, (100, 100, 110, 110)]) == [True, False]
    assert roi_hits(rois, [gt], top_only=True) == [False]
    assert roi_hits([[{"box": (10, 10, 20, 20)}], []], [gt], top_only=True) == [True]


def _row(id, category, correct, lenient, fps=None, seconds=1.0, error=None, groups=None, rois=None, gt=None, peak=None):
    return {
        "id": id,
        "category": category,
        "correct": correct,
        "correct_lenient": lenient,
        "error": error,
        "forward_passes": fps or {},
        "seconds": None if error else seconds,
        "groups": groups or {},
        "rois": rois or [],
        "gt_boxes": gt or [],
        "method": "focus",
        "peak_gpu_memory_gb": peak,
    }


def test_summarize_hand_made_rows():
    fps = {"targets": 1, "relevance": 1, "verify": 3, "answer": 1}
    rows = [
        _row(
            "a",
            "attribute",
            True,
            True,
            fps,
            seconds=2.0,
            rois=[[{"box": (0, 0, 10, 10)}]],
            gt=[(0, 0, 10, 10)],
            peak=1.5,
        ),
        _row(
            "b",
            "attribute",
            False,
            True,
            {"targets": 1, "relevance": 1, "verify": 5, "answer": 1},
            seconds=4.0,
            rois=[[{"box": (50, 50, 60, 60)}, {"box": (0, 0, 10, 10)}]],
            gt=[(0, 0, 10, 10)],
            peak=2.5,
        ),
        _row(
            "c",
            "spatial",
            True,
            False,
            fps,
            seconds=3.0,
            gt=[(0, 0, 4, 4), (5, 5, 9, 9)],
            rois=[[{"box": (0, 0, 4, 4)}]],
        ),
        _row("d", "spatial", False, False, error="cannot decode image"),
    ]
    s = summarize(rows)
    assert s["n"] == 4 and s["errors"] == 1 and s["error_ids"] == ["d"]
    assert s["accuracy"] == 50.0  # the error row counts as wrong
    assert s["accuracy_lenient"] == 50.0
    assert s["per_category"] == {
        "attribute": {"n": 2, "accuracy": 50.0, "accuracy_lenient": 100.0, "accuracy_lmms_eval": 0.0},
        "spatial": {"n": 2, "accuracy": 50.0, "accuracy_lenient": 0.0, "accuracy_lmms_eval": 0.0},
    }
    assert s["fp_search_mean"] == s["fp_search_unshared_mean"] == pytest.approx((4 + 6 + 4) / 3)
    assert s["cycle_mean"] is None
    assert s["fp_per_phase_mean"] == pytest.approx({"answer": 1, "relevance": 1, "targets": 1, "verify": 11 / 3})
    assert s["fp_total_mean"] == pytest.approx((6 + 8 + 6) / 3)
    assert s["seconds_mean"] == pytest.approx(3.0)
    assert s["peak_gpu_memory_gb"] == 2.5
    # GT boxes: a hit, b hit by its 2nd ROI only, c 1 of 2
    assert s["roi_recall_boxes"] == 4
    assert s["roi_recall"] == 75.0
    assert s["top_roi_recall"] == 50.0


def test_summarize_groups_and_empty_cases():
    rows = [
        _row("1", "Perception/AD/count", True, True, groups={"subset": "Perception", "domain": "Perception/AD"}),
        _row("2", "Perception/OCR/text", False, False, groups={"subset": "Perception", "domain": "Perception/OCR"}),
        _row("3", "Reasoning/AD/intent", True, True, groups={"subset": "Reasoning", "domain": "Reasoning/AD"}),
    ]
    s = summarize(rows)
    assert s["per_group"]["subset"] == {
        "Perception": {"n": 2, "accuracy": 50.0, "accuracy_lenient": 50.0, "accuracy_lmms_eval": 0.0},
        "Reasoning": {"n": 1, "accuracy": 100.0, "accuracy_lenient": 100.0, "accuracy_lmms_eval": 0.0},
    }
    assert set(s["per_group"]["domain"]) == {"Perception/AD", "Perception/OCR", "Reasoning/AD"}
    assert s["roi_recall"] is None and s["peak_gpu_memory_gb"] is None
    empty = summarize([])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["seconds_mean"] is None


def test_map_peak_cell_is_the_argmax_cell_in_pixels():
    import torch

    from focus_modules.eval.metrics import map_peak_cell

    heat = torch.zeros(3, 5)
    heat[2, 1] = 1.0
    # a map of 5 x 3 cells over a padded 100 x 60 extent starting at (-10, 0): cells 20 px wide, 20 tall
    assert map_peak_cell(heat, (-10, 0, 90, 60)) == [10.0, 40.0, 30.0, 60.0]


def test_map_hits_within_one_cell():
    from focus_modules.eval.metrics import map_hits

    peak = [[40.0, 40.0, 50.0, 50.0]]  # a 10 px cell
    assert map_hits(peak, [(55, 42, 58, 48)]) == [True]  # in the next cell to the right
    assert map_hits(peak, [(60, 42, 70, 48)]) == [False]  # two cells away: touches the grown cell's edge only
    assert map_hits(peak, [(0, 0, 5, 5), (44, 44, 46, 46)]) == [False, True]
    assert map_hits([], [(0, 0, 5, 5)]) == [False]


def test_summarize_reports_the_map_hit_rate():
    rows = [
        {
            "category": "a",
            "correct": True,
            "correct_lenient": True,
            "error": None,
            "forward_passes": {},
            "seconds": 1.0,
            "gt_boxes": [[0, 0, 10, 10], [100, 100, 110, 110]],
            "map_peaks": [[12, 0, 22, 10]],
        }
    ]
    assert summarize(rows)["map_hit_rate"] == 50.0
    assert summarize([{**rows[0], "map_peaks": []}])["map_hit_rate"] is None


def test_search_passes_are_every_forward_pass_but_targets_and_answer():
    from focus_modules.results import forward_pass_total, search_forward_passes

    focus = {"targets": 1, "relevance": 2, "verify": 3, "answer": 4}
    baseline = {"targets": 1, "search": 7, "answer": 2, "attention-backward": 1, "search-continuation": 5}
    assert search_forward_passes(focus) == 2 + 3  # FOCUS's figure: relevance + verify
    assert search_forward_passes(baseline) == 7  # backward and continuation passes are not forward passes
    assert forward_pass_total(baseline) == 1 + 7 + 2
    rows = [_row("a", "x", True, True, fps=focus), _row("b", "x", False, False, fps=baseline)]
    summary = summarize(rows)
    assert summary["fp_search_mean"] == (5 + 7) / 2
    assert summary["fp_total_mean"] == (10 + 10) / 2
    assert summary["fp_per_phase_mean"]["attention-backward"] == 0.5  # reported, but apart
