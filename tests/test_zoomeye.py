"""ZoomEye (focus_modules.baselines.zoomeye): tree rules, priority, the searches on scripted
confidences, and end to end through FocusWrapper.answer on the tiny random model of every family."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from focus_modules import FocusWrapper
from focus_modules.baselines.zoomeye import (
    DEPTH_LIMIT,
    POPS_PER_LEVEL,
    TYPE2_THRESHOLD,
    ZOOMEYE_SETTINGS,
    Type1Trace,
    build_tree,
    node_priority,
    parse_cues,
    priority_weight,
    split_counts,
    sub_patches,
    type1_search,
    type2_nodes,
    type2_search,
)

# --- the tree --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, expected",
    [(100, 100, (2, 2)), (100, 199, (2, 2)), (100, 200, (1, 4)), (200, 100, (4, 1)), (199, 100, (2, 2))],
)
def test_split_is_4x1_or_1x4_from_aspect_2(width, height, expected):
    assert split_counts(width, height) == expected
    children = sub_patches((5, 7, width, height))
    assert len(children) == 4
    # the children tile the parent exactly: same area, inside it
    assert sum(w * h for _, _, w, h in children) == width * height
    assert all(5 <= x and x + w <= 5 + width and 7 <= y and y + h <= 7 + height for x, y, w, h in children)


def test_tree_stops_below_the_patch_size():
    root, depth = build_tree(400, 300, patch_size=100)

    def walk(node):
        yield node
        for child in node.children:
            yield from walk(child)

    nodes = list(walk(root))
    for node in nodes:
        _, _, w, h = node.box
        assert bool(node.children) == (max(w, h) >= 100)  # split while a side reaches the patch size
    assert depth == max(n.depth for n in nodes) == 3  # 400 -> 200 -> 100 -> 50


def test_priority_weight_and_formula():
    assert priority_weight(0, 4, 0.2) == 0.2
    assert priority_weight(4, 4, 0.2) == 1.0
    assert priority_weight(2, 4, 0.6) == pytest.approx(0.6 + 0.4 * 0.25)
    assert node_priority(0.5, -0.5, 0.75) == pytest.approx(0.75 * 0.5 - 0.25 * 0.5)


def drive(search, score):
    """Run a search generator, answering each requested (node, kind, text) with ``score``."""
    reply = None
    try:
        while True:
            request = search.send(reply)
            reply = [score(node, kind) for node, kind, _ in request]
    except StopIteration as stop:
        return stop.value


def expected_pops(settings):
    """Pops of a type-1 search that never reaches tau_up, from the budget/threshold schedule."""
    budget, upper, decrements = POPS_PER_LEVEL * DEPTH_LIMIT, settings.answer_upper, list(settings.decrements)
    pops = 0
    while True:
        pops += 1
        if pops >= budget:
            upper -= decrements[0]
            decrements = decrements[1:] or decrements
            budget += 2
            if upper < settings.answer_lower:
                return pops


@pytest.mark.parametrize("family", ["llava-1.5", "internvl"])
def test_type1_search_caps_depth_and_gives_up_by_schedule(family):
    settings = ZOOMEYE_SETTINGS[family]
    root, depth = build_tree(3200, 3200, patch_size=50)
    assert depth > DEPTH_LIMIT
    popped = []

    def score(node, kind):
        if kind == "answering":
            popped.append(node)
            return -1.0  # never confident enough
        return node.depth / 10  # prefer deeper nodes

    trace = Type1Trace()
    found = drive(type1_search(root, depth, "cat", "q", settings, False, False, trace), score)
    assert found is None
    assert trace.pops == trace.answered == len(popped) == expected_pops(settings)
    assert max(n.depth for n in popped) == DEPTH_LIMIT  # children of depth-5 nodes never queued
    assert all(n.depth <= DEPTH_LIMIT for n in popped)


def test_type1_search_returns_the_deepest_candidate_and_skips_the_root():
    settings = ZOOMEYE_SETTINGS["llava-1.5"]
    root, depth = build_tree(800, 800, patch_size=100)
    target = (620, 90)  # a point the search should zoom in on

    def inside(node):
        x, y, w, h = node.box
        return x <= target[0] < x + w and y <= target[1] < y + h

    def score(node, kind):
        if kind == "answering":
            assert node.depth > 0  # skip_root: the root's answering confidence is never asked
            return 0.9 if inside(node) and node.depth >= 2 else -0.5
        return 0.8 if inside(node) else -0.8

    trace = Type1Trace()
    found = drive(type1_search(root, depth, "cat", "q", settings, True, True, trace), score)
    assert inside(found) and found.depth == depth  # visit_bottom: kept going to the leaf level
    assert trace.answered == trace.pops - 1


def test_type2_keeps_nodes_above_their_descendants_and_threshold():
    root, _ = build_tree(400, 400, patch_size=50)
    nodes = type2_nodes(root)
    assert len(nodes) == 1 + 4 + 16 and nodes[-1] is root  # post order over depth <= 2
    strong = root.children[1].children[2]

    def score(node, kind):
        assert kind == "existence"
        if node is strong:
            return 0.9
        return 0.95 if node is root.children[3] else TYPE2_THRESHOLD - 0.1

    kept = drive(type2_search(root, "bird"), score)
    assert kept == [strong, root.children[3]]  # root.children[1] (0.5) is below its child


def test_parse_cues():
    reply = "To answer ... So I need the information about the following objects: man and his bag, red car."
    assert parse_cues(reply) == ["man", "red car"]  # "his bag" has a pronoun
    assert parse_cues("So I need the information about the following objects: all birds") == ["all birds"]
    assert parse_cues("no cue sentence") == []


# --- end to end -------------------------------------------------------------------------------------

TINY_MODELS = {
    "llava-1.5": "tiny_llava",
    "llava-onevision": "tiny_onevision",
    "qwen2.5-vl": "tiny_qwen2_5_vl",
    "qwen3-vl": "tiny_qwen3_vl",
    "internvl": "tiny_internvl",
    "gemma3": "tiny_gemma3",
}
QUESTIONS = [
    "What is the color of the cat?",
    "Is the red car on the left or right side of the white truck?",
    "How many birds are there in the image?",
]
OPTIONS = [["red", "blue", "green", "yellow"], ["left", "right"], ["A", "B", "C", "D"]]
TARGETS = [["cat"], ["red car", "white truck"], ["all birds"]]
VIEW = 40  # patch size of the tests' trees: small images still get a few levels


def make_images():
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((120, 200), (90, 70), (100, 100))
    ]


@pytest.fixture(scope="module", params=list(TINY_MODELS))
def family_wrapper(request):
    model, processor = request.getfixturevalue(TINY_MODELS[request.param])
    return request.param, FocusWrapper(model, processor, max_new_tokens=4, target_max_new_tokens=8)


def zoomeye_on(wrapper, family, monkeypatch, **changes):
    """The wrapper's ZoomEye with the family's settings, the tests' tree patch size and ``changes``."""
    settings = dataclasses.replace(ZOOMEYE_SETTINGS[family], view_size=VIEW, **changes)
    monkeypatch.setitem(ZOOMEYE_SETTINGS, family, settings)
    wrapper._search_methods.pop("zoomeye", None)
    return wrapper._search_method("zoomeye")


def count_prompts(monkeypatch, adapter):
    """Count the prompts the model scores (rows of every last_logits call)."""
    seen = []
    original = adapter.last_logits

    def counting(batch):
        seen.append(batch.inputs["input_ids"].shape[0])
        return original(batch)

    monkeypatch.setattr(adapter, "last_logits", counting)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("upper", [None, 1.01])  # the family's tau_up, and one never reached
def test_zoomeye_end_to_end_counts_its_passes(family_wrapper, monkeypatch, upper):
    family, wrapper = family_wrapper
    changes = {} if upper is None else {"answer_upper": upper}
    method = zoomeye_on(wrapper, family, monkeypatch, **changes)
    prompts = count_prompts(monkeypatch, wrapper.adapter)
    results = wrapper.answer(make_images(), QUESTIONS, OPTIONS, targets=TARGETS, method="zoomeye")
    traces = method.traces
    assert sum(prompts) == sum(r.forward_passes["search"] for r in results)
    for result, trace, targets in zip(results, traces, TARGETS):
        assert result.method == "zoomeye" and isinstance(result.answer, str)
        assert result.forward_passes["targets"] == 0 and result.target_source == "given"
        assert result.forward_passes["search"] == trace.passes
        assert result.forward_passes["answer"] == 1
        assert set(result.forward_passes) - {"search"} <= {"targets", "relevance", "verify", "answer"}
        assert result.forward_passes.get("relevance", 0) == result.forward_passes.get("verify", 0) == 0
        searched = trace.early_exit == 0 or len(trace.type1) > 0
        if searched:
            assert len(result.rois) == len(targets)
        assert result.final_view in ("image", "crop", "zoomeye")
        if result.final_view == "zoomeye":
            assert not family.startswith("llava-1") and result.final_boxes
    # type 2: every node of depth <= 2 scored once
    assert traces[2].type2_scored == len(type2_nodes(build_tree(100, 100, VIEW)[0])) == 1 + 4 + 16
    assert results[2].question_type == 2 and results[2].targets == ["bird"]
    if upper is not None:  # never confident: every type-1 search runs its whole schedule
        assert all(t.pops > 1 for t in traces[0].type1)


@pytest.mark.slow
def test_zoomeye_batched_equals_single(family_wrapper, monkeypatch):
    family, wrapper = family_wrapper
    zoomeye_on(wrapper, family, monkeypatch)
    images = make_images()
    together = wrapper.answer(images, QUESTIONS, OPTIONS, targets=TARGETS, method="zoomeye")
    alone = [
        wrapper.answer([im], [q], [o], targets=[t], method="zoomeye")[0]
        for im, q, o, t in zip(images, QUESTIONS, OPTIONS, TARGETS)
    ]
    for a, b in zip(together, alone):
        assert a.forward_passes == b.forward_passes
        assert a.final_boxes == b.final_boxes and a.final_view == b.final_view
        assert [[r.box for r in rois] for rois in a.rois] == [[r.box for r in rois] for rois in b.rois]
        for ra, rb in zip(sum(a.rois, []), sum(b.rois, [])):
            if ra.confidence is not None:
                assert ra.confidence == pytest.approx(rb.confidence, abs=1e-4)


@pytest.mark.slow
def test_cues_from_the_model_and_early_exit(family_wrapper, monkeypatch):
    family, wrapper = family_wrapper
    # every answering confidence reaches tau_up = -1: global-local models exit early on 2 cues
    method = zoomeye_on(wrapper, family, monkeypatch, answer_upper=-1.0)
    two_cues = [["red car", "white truck"]]
    [result] = wrapper.answer(make_images()[1:2], QUESTIONS[1:2], OPTIONS[1:2], targets=two_cues, method="zoomeye")
    [trace] = method.traces
    if method.settings.global_local:
        assert trace.early_exit == 2 and not trace.type1 and result.final_view == "image"
    else:
        assert trace.early_exit == 0 and len(trace.type1) == 2
    assert result.forward_passes["search"] == trace.passes
    # no targets given: one cue generation per question, under "targets"
    results = wrapper.answer(make_images(), QUESTIONS, OPTIONS, method="zoomeye")
    for result, trace in zip(results, method.traces):
        assert result.forward_passes["targets"] == 1
        assert result.forward_passes["search"] == trace.passes
        assert result.target_source in ("model", "none")
