"""Metrics of the paper (A.2, Sec. 4.3) computed from result rows (one dict per question).

Accuracies are percentages, the unweighted mean over questions (A.2). A question whose image
could not be decoded (an error row) counts as answered wrongly: it is in ``n`` and in the
denominators, so a broken file can never raise the accuracy; ``errors`` says how many there
were. Efficiency numbers (forward passes, seconds) are means over the rows without an error.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from focus_modules.results import forward_pass_total, search_forward_passes

# A proposed ROI "recalls" a GT box when it covers at least this fraction of the box (Sec. 4.3).
RECALL_COVERAGE = 0.5


def strict_letter(answer: str | None, letters: str) -> str | None:
    """The answer as an option letter under A.2's strict protocol: the whole output, stripped
    of surrounding whitespace, must be one of ``letters``; ``"(A)"`` or ``"The answer is A"``
    give ``None``."""
    if answer is None:
        return None
    text = answer.strip()
    return text if len(text) == 1 and text in letters else None


def lenient_letter(answer: str | None, letters: str) -> str | None:
    """The first standalone option letter in the answer (not part of a longer word), e.g.
    ``"(B) red"`` -> ``"B"``, ``"Answer: C."`` -> ``"C"``; ``None`` if there is none."""
    if answer is None or not letters:
        return None
    match = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", answer)
    return match.group(1) if match else None


def box_coverage(box: Sequence[float], gt: Sequence[float]) -> float:
    """Fraction of the area of ``gt`` covered by ``box`` (both ``(x1, y1, x2, y2)``)."""
    width = min(box[2], gt[2]) - max(box[0], gt[0])
    height = min(box[3], gt[3]) - max(box[1], gt[1])
    area = (gt[2] - gt[0]) * (gt[3] - gt[1])
    if width <= 0 or height <= 0 or area <= 0:
        return 0.0
    return width * height / area


def roi_hits(
    rois: Sequence[Sequence[Mapping[str, Any]]], gt_boxes: Sequence[Sequence[float]], top_only: bool = False
) -> list[bool]:
    """For each GT box: is it covered to at least 50 % by one of the proposed ROIs?

    Args:
        rois: per target, its ROIs best first, each a mapping with ``"box"`` (xyxy pixels).
            The ROIs of all targets are pooled, since the targets named by the model need not
            match the GT objects one to one.
        gt_boxes: ``(x1, y1, x2, y2)`` boxes in pixels.
        top_only: use only the best ROI of each target (the one the answer is built from).
    """
    boxes = [roi["box"] for target in rois for roi in (target[:1] if top_only else target)]
    return [any(box_coverage(box, gt) >= RECALL_COVERAGE for box in boxes) for gt in gt_boxes]


def map_peak_cell(relevance_map, extent: Sequence[float]) -> list[float]:
    """The relevance map's argmax cell as an ``(x1, y1, x2, y2)`` pixel box of the original image.

    Args:
        relevance_map: ``[h, w]`` tensor (a :class:`~focus_modules.results.FocusResult` map).
        extent: ``(x1, y1, x2, y2)`` pixels the whole map covers (its ``map_extents`` entry).
    """
    h, w = relevance_map.shape
    row, col = divmod(int(relevance_map.reshape(-1).argmax()), w)
    cell_w, cell_h = (extent[2] - extent[0]) / w, (extent[3] - extent[1]) / h
    x1, y1 = extent[0] + col * cell_w, extent[1] + row * cell_h
    return [float(x1), float(y1), float(x1 + cell_w), float(y1 + cell_h)]


def map_hits(peaks: Sequence[Sequence[float]], gt_boxes: Sequence[Sequence[float]]) -> list[bool]:
    """For each GT box: does some target's map peak lie within one cell of it (the peak cell,
    grown by one cell on every side, overlaps the box)? The targets' peaks are pooled, as in
    :func:`roi_hits`.

    Args:
        peaks: per target, its peak cell (:func:`map_peak_cell`).
        gt_boxes: ``(x1, y1, x2, y2)`` boxes in pixels.
    """
    grown = []
    for x1, y1, x2, y2 in peaks:
        w, h = x2 - x1, y2 - y1
        grown.append((x1 - w, y1 - h, x2 + w, y2 + h))
    return [any(box_coverage(box, gt) > 0 for box in grown) for gt in gt_boxes]


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Every metric of a run, from its rows.

    Rows need ``category``, ``correct``, ``correct_lenient``, ``error``; rows without an
    error also ``forward_passes`` (phase -> count), ``seconds``; optionally
    ``correct_lmms_eval``, ``fp_search_unshared`` (the passes of the search a row used, also
    when another row of the same image and question spent them), ``groups`` (name -> value;
    ``cycle`` for HR-Bench's ``cycle_category``), ``gt_boxes`` + ``rois`` + ``method`` (ROI
    recall of the rows of a searching method: every method but ``"vanilla"``), ``map_peaks``
    (map hit rate) and ``peak_gpu_memory_gb``.

    Returns:
        ``n``, ``accuracy``, ``accuracy_lenient``, ``accuracy_lmms_eval`` (percent; the strict
        match, the first standalone letter, lmms-eval's extraction), ``per_category`` and
        ``per_group`` (``n`` and the three accuracies per category / group value),
        ``cycle_mean`` (rows with a ``cycle`` group: the accuracies and per-category accuracies
        of each cycle, averaged over the cycles, as VLMEvalKit and lmms-eval score HR-Bench;
        else ``None``), ``errors`` (count) and ``error_ids``, ``fp_search_mean`` (search forward
        passes spent per question: every forward pass but step I's and the answer's,
        :func:`focus_modules.results.search_forward_passes`), ``fp_search_unshared_mean`` (the
        passes of the search each question used, the per-question figure of the paper; equal
        to ``fp_search_mean`` unless questions shared a search), ``fp_per_phase_mean`` (every
        phase, backward and continuation ones included), ``fp_total_mean`` (forward passes
        only), ``seconds_mean``, ``peak_gpu_memory_gb`` (max over rows, ``None`` off CUDA),
        ``roi_recall`` and ``top_roi_recall`` (percent of GT boxes, ``None``
        without GT boxes) with ``roi_recall_boxes``, ``map_hit_rate`` (percent of GT boxes
        within one cell of a target's relevance-map argmax, :func:`map_hits`; ``None`` without
        maps or GT boxes), and
        ``gt_boxes_clipped`` (GT boxes that reached outside their image, clipped to it).
    """
    rows = list(rows)
    answered = [r for r in rows if not r.get("error")]
    per_group: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    per_category: dict[str, list] = defaultdict(list)
    for row in rows:
        per_category[row["category"]].append(row)
        for name, value in (row.get("groups") or {}).items():
            per_group[name][value].append(row)

    phases = sorted({phase for r in answered for phase in r.get("forward_passes", {})})
    fp_per_phase = {p: _mean([r["forward_passes"].get(p, 0) for r in answered]) for p in phases}
    hits, top_hits, peak_hits = [], [], []
    for row in answered:
        if row.get("method") != "vanilla" and row.get("gt_boxes"):
            hits += roi_hits(row.get("rois") or [], row["gt_boxes"])
            top_hits += roi_hits(row.get("rois") or [], row["gt_boxes"], top_only=True)
        if row.get("map_peaks") and row.get("gt_boxes"):
            peak_hits += map_hits(row["map_peaks"], row["gt_boxes"])
    peaks = [r["peak_gpu_memory_gb"] for r in rows if r.get("peak_gpu_memory_gb") is not None]
    return {
        "n": len(rows),
        **_accuracies(rows),
        "per_category": {name: {"n": len(group), **_accuracies(group)} for name, group in sorted(per_category.items())},
        "per_group": {
            name: {value: {"n": len(group), **_accuracies(group)} for value, group in sorted(values.items())}
            for name, values in sorted(per_group.items())
        },
        "cycle_mean": _cycle_mean(rows),
        "errors": len(rows) - len(answered),
        "error_ids": [r["id"] for r in rows if r.get("error")],
        "fp_search_mean": _mean([_fp_search(r) for r in answered]),
        "fp_search_unshared_mean": _mean([r.get("fp_search_unshared", _fp_search(r)) for r in answered]),
        "fp_per_phase_mean": fp_per_phase,
        "fp_total_mean": _mean([forward_pass_total(r["forward_passes"]) for r in answered]),
        "seconds_mean": _mean([r["seconds"] for r in answered]),
        "peak_gpu_memory_gb": max(peaks) if peaks else None,
        "roi_recall": _percent(hits),
        "top_roi_recall": _percent(top_hits),
        "roi_recall_boxes": len(hits),
        "map_hit_rate": _percent(peak_hits),
        "gt_boxes_clipped": sum(int(r.get("gt_boxes_clipped") or 0) for r in rows),
    }


def _fp_search(row: Mapping[str, Any]) -> int:
    return search_forward_passes(row["forward_passes"])


def _accuracies(rows: list[Mapping[str, Any]]) -> dict[str, float | None]:
    return {
        "accuracy": _percent([bool(r.get("correct")) for r in rows]),
        "accuracy_lenient": _percent([bool(r.get("correct_lenient")) for r in rows]),
        "accuracy_lmms_eval": _percent([bool(r.get("correct_lmms_eval")) for r in rows]),
    }


def _cycle_mean(rows: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Accuracies per ``cycle`` group, then their mean over the cycles (per category: over the
    cycles holding that category)."""
    cycles: dict[str, list] = defaultdict(list)
    for row in rows:
        cycle = (row.get("groups") or {}).get("cycle")
        if cycle is not None:
            cycles[cycle].append(row)
    if not cycles:
        return None
    overall = [_accuracies(group) for group in cycles.values()]
    per_category: dict[str, list] = defaultdict(list)
    for group in cycles.values():
        by_category: dict[str, list] = defaultdict(list)
        for row in group:
            by_category[row["category"]].append(row)
        for name, members in by_category.items():
            per_category[name].append(_accuracies(members))
    return {
        "n_cycles": len(cycles),
        **_mean_of(overall),
        "per_category": {name: _mean_of(values) for name, values in sorted(per_category.items())},
    }


def _mean_of(accuracies: list[dict[str, float | None]]) -> dict[str, float | None]:
    return {key: _mean([a[key] for a in accuracies if a[key] is not None]) for key in accuracies[0]}


def _percent(flags: list[bool]) -> float | None:
    return 100.0 * sum(flags) / len(flags) if flags else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
