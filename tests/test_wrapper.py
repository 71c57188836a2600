"""FocusWrapper end to end on a tiny random LLaVA-1.5 (CPU, offline)."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from focus_modules import FocusConfig, FocusWrapper

pytestmark = pytest.mark.slow

N_STEPS = 2


def make_images():
    rng = np.random.default_rng(0)
    noise = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    return [
        Image.fromarray(noise(120, 200)),  # landscape
        Image.fromarray(noise(210, 90)),  # portrait
        Image.fromarray(noise(100, 100)).convert("L"),  # square, grayscale
        Image.fromarray(noise(20, 30)),  # smaller than the 96 px input
        Image.fromarray(noise(64, 150)).convert("RGBA"),
        noise(90, 130),  # uint8 array
    ]


QUESTIONS = [
    "What is the color of the cat?",
    "Is the red car on the left or right side of the white truck?",
    "How many birds are there in the image?",
    "What is the color of the cup?",
    "What is the relative position of the ball to the bench?",
    "Which side of the dog is the cat on?",
]
OPTIONS = [["red", "blue", "green", "yellow"], ["left", "right"], ["A", "B", "C", "D"], None, ["left", "right"], None]


@pytest.fixture(scope="module")
def config():
    return FocusConfig.preset("llava-1.5", dataset="vstar", n_steps=N_STEPS, layers=(2, 4))


@pytest.fixture(scope="module")
def wrapper(tiny_llava, config):
    model, processor = tiny_llava
    return FocusWrapper(model, processor, config, max_new_tokens=4, target_max_new_tokens=8)


@pytest.fixture(scope="module")
def batched(wrapper):
    return wrapper.answer(make_images(), QUESTIONS, OPTIONS)


def comparable(result):
    """Everything but timings and floats that carry batching noise (compared with a tolerance)."""
    return dataclasses.replace(
        result,
        timings={},
        relevance_maps=[],
        rois=[[(r.box, r.confidence is None) for r in rois] for rois in result.rois],
    )


def test_batched_equals_one_at_a_time_and_grouped(wrapper, batched):
    images = make_images()
    single = [wrapper.answer([image], [q], [o])[0] for image, q, o in zip(images, QUESTIONS, OPTIONS)]
    grouped = wrapper.answer(images, QUESTIONS, OPTIONS, batch_size=4)
    for a, b, c in zip(batched, single, grouped):
        assert comparable(a) == comparable(b) == comparable(c)
        for map_a, map_b, map_c in zip(a.relevance_maps, b.relevance_maps, c.relevance_maps):
            torch.testing.assert_close(map_a, map_b, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(map_a, map_c, rtol=1e-4, atol=1e-6)
        for rois_a, rois_b in zip(a.rois, b.rois):
            for ra, rb in zip(rois_a, rois_b):
                assert ra.relevance == pytest.approx(rb.relevance, abs=1e-5)
                if ra.confidence is not None:
                    assert ra.confidence == pytest.approx(rb.confidence, abs=1e-4)


def test_results_are_well_formed(batched, config):
    images = make_images()
    for result, image, question in zip(batched, images, QUESTIONS):
        width, height = image.size if isinstance(image, Image.Image) else image.shape[1::-1]
        assert isinstance(result.answer, str)
        assert result.method == "focus" and result.target_source in ("model", "keywords")
        assert result.targets and all(isinstance(t, str) and t for t in result.targets)
        assert result.question_type == (2 if question.startswith("How many") else 1)
        assert len(result.rois) == len(result.relevance_maps) == len(result.map_extents) == len(result.targets)
        for x1, y1, x2, y2 in result.map_extents:  # the padded square around the image
            assert x1 <= 0 and y1 <= 0 and x2 >= width and y2 >= height
            assert x2 - x1 == y2 - y1 == max(width, height)
        for rois, m in zip(result.rois, result.relevance_maps):
            assert m.shape == (12, 12) and m.dtype == torch.float32
            assert torch.isclose(m.sum(), torch.tensor(1.0), atol=1e-5)
            assert 0 < len(rois) <= config.k
            for roi in rois:
                x1, y1, x2, y2 = roi.box
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (roi.box, (width, height))
            confidences = [r.confidence for r in rois if r.confidence is not None]
            assert confidences == sorted(confidences, reverse=True)
            assert all(-1 <= c <= 1 for c in confidences)
        assert set(result.forward_passes) == set(result.timings) == {"targets", "relevance", "verify", "answer"}
        assert all(t >= 0 for t in result.timings.values()) and result.timings["relevance"] > 0
        for box in result.final_boxes:
            assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
        assert result.final_view in ("crop", "union", "canvas", "image")


def verified_count_is_consistent(rois, question_type, n_steps, overrun):
    """The verified ROIs are the top-v by relevance, and v follows n_steps and overrun."""
    by_relevance = sorted(rois, key=lambda r: -r.relevance)
    v = sum(r.confidence is not None for r in rois)
    assert all(r.confidence is not None for r in by_relevance[:v])
    if question_type == 2:
        return v == len(rois)
    if not overrun or v <= n_steps:
        said_yes = any(r.confidence >= 0 for r in by_relevance[:v])
        return v == min(n_steps, len(rois)) and (not overrun or said_yes or v == len(rois))
    earlier_no = all(r.confidence < 0 for r in by_relevance[: v - 1])
    return earlier_no and (by_relevance[v - 1].confidence >= 0 or v == len(rois))


def test_forward_passes_follow_n_steps_and_overrun(wrapper, batched, tiny_llava, config):
    for result in batched:
        fp = result.forward_passes
        assert fp["targets"] == 1 and fp["answer"] == 1
        # several targets: one prefix pass over the image + one suffix pass per target
        targets = len(result.targets)
        assert fp["relevance"] == (targets + 1 if targets > 1 else targets)
        assert result.tokens["relevance"] > 0 and result.tokens["answer"] > 0
        assert fp["verify"] == sum(r.confidence is not None for rois in result.rois for r in rois)
        for rois in result.rois:
            assert verified_count_is_consistent(rois, result.question_type, N_STEPS, overrun=True)
    model, processor = tiny_llava
    images = make_images()[:3]
    for n_steps in (1, 3):
        cfg = dataclasses.replace(config, n_steps=n_steps, overrun=False)
        results = FocusWrapper(model, processor, cfg, max_new_tokens=2).answer(
            images, QUESTIONS[:3], targets=[["cat"], ["red car", "white truck"], ["all birds"]]
        )
        for result in results:
            assert result.forward_passes["targets"] == 0 and result.target_source == "given"
            expected = sum(len(rois) if result.question_type == 2 else min(n_steps, len(rois)) for rois in result.rois)
            assert result.forward_passes["verify"] == expected
            for rois in result.rois:
                assert verified_count_is_consistent(rois, result.question_type, n_steps, overrun=False)
        assert results[2].question_type == 2 and results[2].targets == ["birds"]


def test_vanilla_answers_on_the_whole_image(wrapper):
    images = make_images()[:2]
    vanilla = wrapper.answer(images, QUESTIONS[:2], OPTIONS[:2], method="vanilla")
    no_target = wrapper.answer(images, QUESTIONS[:2], OPTIONS[:2], targets=[[], []])
    for v, n in zip(vanilla, no_target):
        assert v.forward_passes == n.forward_passes == {"targets": 0, "relevance": 0, "verify": 0, "answer": 1}
        assert v.final_view == n.final_view == "image" and v.rois == [] and v.method == "vanilla"
        assert v.answer == n.answer
    assert wrapper.answer(images[:1], QUESTIONS[:1], progress=True)[0].answer is not None


def test_answer_prompts_replace_only_step_vi(wrapper, batched, monkeypatch):
    images = make_images()[:3]
    own = [wrapper.adapter.answer_prompt(q, o) for q, o in zip(QUESTIONS[:3], OPTIONS[:3])]
    same = wrapper.answer(images, QUESTIONS[:3], OPTIONS[:3], answer_prompts=own)
    assert [comparable(r) for r in same] == [comparable(r) for r in batched[:3]]

    seen = []
    encode_answer = wrapper.adapter.encode_answer

    def spy(view, question, options):
        seen.append((question, options))
        return encode_answer(view, question, options)

    monkeypatch.setattr(wrapper.adapter, "encode_answer", spy)
    harness = ["USER PROMPT one\nA. red\nB. blue\nAnswer with the letter.", None, "  kept as it is  "]
    results = wrapper.answer(images, QUESTIONS[:3], OPTIONS[:3], answer_prompts=harness)
    assert seen == [(harness[0], None), (QUESTIONS[1], OPTIONS[1]), (harness[2], None)]
    for result, reference in zip(results, batched[:3]):  # steps I-V still read the question

        def search_only(r):  # step VI's answer and prompt tokens differ by design
            return dataclasses.replace(comparable(r), answer="", tokens={**r.tokens, "answer": 0})

        assert search_only(result) == search_only(reference)


def test_input_errors(wrapper, tiny_llava):
    image = Image.new("RGB", (50, 40))
    cases = [
        (dict(images=[image], questions=["  "]), r"questions\[0\] must be a non-empty string"),
        (dict(images=[image], questions="What?"), "questions must be a list"),
        (dict(images=[image, image], questions=["What?"]), "2 images for 1 questions"),
        (dict(images=[image], questions=["What?"], options=["red", "blue"]), "one entry per question"),
        (dict(images=[image], questions=["What?"], options=["red"]), r"options\[0\] must be a list of strings"),
        (dict(images=[image], questions=["What?"], options=[[]]), r"options\[0\] is an empty list"),
        (dict(images=[image], questions=["What?"], options=[["red", ""]]), r"options\[0\]\[1\]"),
        (dict(images=[image], questions=["What?"], targets=[["cat", 3]]), r"targets\[0\]\[1\]"),
        (dict(images=[image], questions=["What?"], method="zoom"), "method must be one of"),
        (dict(images=[image], questions=["What?"], batch_size=0), "batch_size"),
        (dict(images=[np.zeros((4, 4), np.float64)], questions=["What?"]), "uint8"),
        (dict(images=[image], questions=["What?"], answer_prompts="Why?"), "answer_prompts must be None or a list"),
        (dict(images=[image], questions=["What?"], answer_prompts=[" "]), r"answer_prompts\[0\] must be None or"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            wrapper.answer(**kwargs)
    model, processor = tiny_llava
    with pytest.raises(ValueError, match=r"layers=\(14, 32\).*4 layers.*--set layers=2,4"):
        FocusWrapper(model, processor, FocusConfig.preset("llava-1.5"))  # reads layers 14..31
    assert FocusWrapper(model, processor).config.layers == (2, 4)  # the preset scaled to 4 layers
    with pytest.raises(
        ValueError,
        match=r"no FOCUS adapter for Linear; supported model families: .*llava-1.5 \(LlavaForConditionalGeneration\)",
    ):
        FocusWrapper(nn.Linear(2, 2), processor)


def test_shared_search_is_the_search_each_rotation_would_run(wrapper):
    """HR-Bench rotates each question's options over 4 rows: one search serves them all."""
    image = make_images()[0]
    question = QUESTIONS[0]
    rotations = [OPTIONS[0][i:] + OPTIONS[0][:i] for i in range(4)]
    images = [image.copy() for _ in range(4)] + [make_images()[1]]
    questions = [question] * 4 + [QUESTIONS[1]]
    options = rotations + [OPTIONS[1]]
    shared = wrapper.answer(images, questions, options, search_keys=["a"] * 4 + ["b"], batch_size=2)
    alone = [wrapper.answer([im], [q], [o])[0] for im, q, o in zip(images, questions, options)]
    assert [r.search_reused_from for r in shared] == [None, 0, 0, 0, None]
    for i, (mine, own) in enumerate(zip(shared, alone)):
        search = ("targets", "relevance", "verify")
        if i in (1, 2, 3):  # passes are recorded where they were spent
            assert all(mine.forward_passes[p] == 0 for p in search)
        else:
            assert mine.forward_passes == own.forward_passes
        assert mine.forward_passes["answer"] == 1
        # passes and tokens are charged where spent (the leader), the rest is the search's own
        assert comparable(
            dataclasses.replace(mine, forward_passes={}, tokens={}, search_reused_from=None)
        ) == comparable(dataclasses.replace(own, forward_passes={}, tokens={}))
    assert sum(sum(r.forward_passes[p] for p in ("relevance", "verify")) for r in shared) == sum(
        alone[i].forward_passes["relevance"] + alone[i].forward_passes["verify"] for i in (0, 4)
    )
    with pytest.raises(ValueError, match="share search key 'a' but not their question"):
        wrapper.answer(images[:2], [question, QUESTIONS[2]], options[:2], search_keys=["a", "a"])


def test_logits_matching_scores_each_option_as_the_reply(wrapper, tiny_llava):
    model, _ = tiny_llava
    adapter = wrapper.adapter
    image, question, options = make_images()[0], QUESTIONS[0], OPTIONS[0]
    (result,) = wrapper.answer([image], [question], [options], method="vanilla", answer_scheme="logits")
    assert result.forward_passes["answer"] == len(options)  # one prompt per option
    assert result.answer == "ABCD"[int(np.argmax(result.option_scores))]
    # oracle: each option's own unbatched sequence, full logits, mean log-probability of its tokens
    from focus_modules.adapters.base import FinalView

    view = FinalView([image.convert("RGB")], "image", [])
    for option, score in zip(options, result.option_scores):
        prompt = adapter.encode_answer(view, question, None)
        tail = adapter.tokenizer(option, add_special_tokens=False)["input_ids"]
        ids = torch.cat([prompt.input_ids, torch.tensor(tail)])[None]
        with torch.no_grad():
            logits = (
                model(
                    input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=prompt.model_inputs["pixel_values"]
                )
                .logits[0]
                .double()
            )
        log_probs = logits[-len(tail) - 1 : -1].log_softmax(-1)
        expected = log_probs.gather(-1, torch.tensor(tail)[:, None]).mean().item()
        # the batch is left-padded (other summation lengths): fp32 noise on ~10-nat log-probs
        assert score == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="questions \\[0\\] have none"):
        wrapper.answer([image], [question], None, answer_scheme="logits")
    with pytest.raises(ValueError, match="answer_scheme must be one of"):
        wrapper.answer([image], [question], [options], answer_scheme="vote")


def test_answer_prompts_replace_the_adapters_question_text(wrapper, monkeypatch):
    seen = []
    encode = wrapper.adapter.encode_answer

    def spy(view, question, options):
        seen.append((question, options))
        return encode(view, question, options)

    monkeypatch.setattr(wrapper.adapter, "encode_answer", spy)
    images = make_images()[:2]
    harness = "What is the color of the cat?\nA. red\nB. blue\nAnswer the option letter directly."
    wrapper.answer(images, QUESTIONS[:2], OPTIONS[:2], answer_prompts=[harness, None])
    assert seen == [(harness, None), (QUESTIONS[1], OPTIONS[1])]
