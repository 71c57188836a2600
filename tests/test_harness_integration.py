"""The harness loop (focus_modules.integrations.harness) on plain requests, with the shipped
tiny model (CPU, offline); no harness is imported."""

import pytest
from PIL import Image

from focus_modules import FocusConfig, FocusWrapper
from focus_modules.integrations.harness import (
    HarnessRequest,
    cut_at_stops,
    generate_until,
    generation_settings,
    generic_question,
    question_for,
    strip_image_placeholders,
)
from focus_modules.synthetic.tiny_llava import load_tiny_focus_llava

N_STEPS = 2
INSTRUCTION = "\nAnswer with the option's letter from the given choices directly."


@pytest.fixture(scope="module")
def wrapper():
    model, processor = load_tiny_focus_llava()
    config = FocusConfig.preset("llava-1.5", dataset="vstar", n_steps=N_STEPS, layers=(3, 6))
    return FocusWrapper(model, processor, config, max_new_tokens=64, target_max_new_tokens=16)


def scene(colour, size=(240, 160), box=(150, 40, 190, 80)):
    image = Image.new("RGB", size, (235, 235, 235))
    image.paste(colour, box)
    return image


def vstar_context(question, options):
    lines = [question] + [f"{letter}. {option}" for letter, option in zip("ABCD", options)]
    return "\n".join(lines) + INSTRUCTION


REQUESTS = [
    HarnessRequest(
        vstar_context("What is the color of the square?", ["red", "blue", "green", "yellow"]),
        [scene((200, 30, 30))],
        "What is the color of the square?",
        8,
    ),
    HarnessRequest(
        "<image>\n" + vstar_context("What is the color of the square?", ["blue", "red"]),
        [scene((30, 30, 200), size=(300, 300))],
        "What is the color of the square?",
        8,
    ),
    HarnessRequest("Name a colour.", [], "", 6),
    HarnessRequest(
        vstar_context("How many squares are there in the image?", ["1", "2", "3", "4"]),
        [scene((30, 160, 30))],
        "How many squares are there in the image?",
        6,
    ),
]


# ----------------------------------------------------------------------------- questions


def test_question_readers_of_known_benchmarks():
    vstar = {"text": "What is the color of the cup? (A) red (B) blue (C) green (D) white", "label": "A"}
    assert question_for("vstar_bench", vstar, "ignored") == "What is the color of the cup?"
    assert question_for("vstar_bench_relative_position", vstar, "") == "What is the color of the cup?"
    assert question_for("hrbench8k", {"question": " Which sign is red? ", "A": "x"}, "") == "Which sign is red?"
    mme = {"question": "What is written on the bus?", "multi-choice options": ["(A) 12", "(B) 21"]}
    assert question_for("mmerealworld_lite", mme, "What is written... The choices") == "What is written on the bus?"
    with pytest.raises(ValueError, match=r"a HR-Bench document needs a 'question' field; this one has \['prompt'\]"):
        question_for("hrbench4k", {"prompt": "?"}, "")


def test_generic_question_is_the_context_before_the_options():
    cases = {
        "<image>\nWhat is the colour of the car?\nA. red\nB. blue\nAnswer with the letter.": (
            "What is the colour of the car?"
        ),
        "Look closely.\nWhich animal is it?\n(A) cat\n(B) dog": "Look closely.\nWhich animal is it?",
        "Where is the cup?\nA) left\nB) right": "Where is the cup?",
        "Question: Where is the cup?\nOptions:\nA. left\nB. right\nPlease select.": "Question: Where is the cup?",
        "Options:\nA. left\nB. right": "Options:\nA. left\nB. right",
        "<image> Describe the sign. Answer in one word.": "Describe the sign. Answer in one word.",
        "A. only options\nB. here": "A. only options\nB. here",  # nothing before them: the whole prompt
    }
    for context, question in cases.items():
        assert generic_question(context) == question
        assert question_for("some_task", {}, context) == question
    with pytest.raises(ValueError, match="found no question"):
        question_for("some_task", {}, "<image>\n  ")


def test_image_placeholders_and_stops():
    assert strip_image_placeholders("<image>\n<image> What?\nA. x") == "What?\nA. x"
    assert cut_at_stops("B. blue\n\nQuestion: next", ["\n\n", "Question:"]) == "B. blue"
    assert cut_at_stops("B", ["\n"]) == "B"


def test_generation_settings():
    assert generation_settings({}, 1024) == (1024, ())
    assert generation_settings(
        {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False, "until": "\n\n"},
        1024,
    ) == (16, ("\n\n",))
    assert generation_settings({"until": ["Q:", ""]}, 8) == (8, ("Q:",))
    for kwargs, match in [
        ({"do_sample": True}, "decodes greedily.*sampling"),
        ({"temperature": 0.2}, "sampling"),
        ({"num_beams": 3}, "beam search"),
        ({"max_new_tokens": 0}, "max_new_tokens must be"),
        ({"until": [3]}, "until must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            generation_settings(kwargs, 16)


# ----------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def answers(wrapper):
    return generate_until(wrapper, REQUESTS, batch_size=None)


def test_step_vi_reads_the_context_and_steps_i_to_v_the_question(wrapper, monkeypatch):
    adapter = wrapper.adapter
    asked, answered = [], []
    target_prompt, encode_answer = adapter.target_prompt, adapter.encode_answer
    monkeypatch.setattr(adapter, "target_prompt", lambda q: asked.append(q) or target_prompt(q))
    monkeypatch.setattr(
        adapter,
        "encode_answer",
        lambda view, text, options: answered.append((text, options)) or encode_answer(view, text, options),
    )
    generate_until(wrapper, REQUESTS)
    visual = [r for r in REQUESTS if r.images]
    assert sorted(asked) == sorted(r.question for r in visual)
    assert sorted(answered) == sorted((strip_image_placeholders(r.context), None) for r in visual)


def test_answers_match_the_wrapper_and_do_not_depend_on_batching(wrapper, answers):
    for request, answer in zip(REQUESTS, answers):
        if request.images:
            saved, wrapper.max_new_tokens = wrapper.max_new_tokens, request.max_new_tokens
            [direct] = wrapper.answer(
                request.images, [request.question], answer_prompts=[strip_image_placeholders(request.context)]
            )
            wrapper.max_new_tokens = saved
            assert answer.text == direct.answer and answer.result.targets == direct.targets
            assert answer.result.forward_passes == direct.forward_passes
        else:  # text only: the model on the context alone, no search
            adapter = wrapper.adapter
            [direct] = adapter.generate(adapter.collate([adapter.encode_text(request.context)]), request.max_new_tokens)
            assert answer.text == direct and answer.result is None
    one_by_one = generate_until(wrapper, REQUESTS, batch_size=1)
    assert [a.text for a in one_by_one] == [a.text for a in answers]
    assert [a.log_record()["forward_passes"] for a in one_by_one] == [a.log_record()["forward_passes"] for a in answers]
    assert wrapper.max_new_tokens == 64  # the per-request budget does not leak into the wrapper


def test_budgets_and_stop_strings(wrapper, answers):
    tokenizer = wrapper.adapter.tokenizer
    for request, answer in zip(REQUESTS, answers):
        assert len(tokenizer(answer.text, add_special_tokens=False)["input_ids"]) <= request.max_new_tokens
    text_only = REQUESTS[2]
    full = answers[2].text
    assert len(full) > 2, "the tiny model's text answer is too short to test a stop string"
    stop = full[1:3]
    [cut] = generate_until(wrapper, [text_only._replace(until=(stop,))])
    assert cut.text == full[: full.index(stop)]


def test_log_records(answers):
    focus = answers[0].log_record()
    assert focus["method"] == "focus" and focus["targets"] and focus["question_type"] == 1
    assert focus["forward_passes"]["targets"] == 1 and focus["forward_passes"]["answer"] == 1
    assert focus["fp_search"] == focus["forward_passes"]["relevance"] + focus["forward_passes"]["verify"]
    assert focus["fp_total"] == sum(focus["forward_passes"].values())
    assert focus["forward_passes"]["relevance"] == len(focus["targets"])
    assert focus["forward_passes"]["verify"] >= min(N_STEPS, 1)
    counting = answers[3].log_record()
    assert counting["question_type"] == 2
    assert answers[2].log_record() == {
        "method": "text-only",
        "forward_passes": {"answer": 1},
        "fp_search": 0,
        "fp_total": 1,
    }


def test_vanilla_and_refusals(wrapper):
    [vanilla] = generate_until(wrapper, REQUESTS[:1], method="vanilla")
    assert vanilla.log_record()["forward_passes"] == {"targets": 0, "relevance": 0, "verify": 0, "answer": 1}
    assert vanilla.result.final_view == "image"
    two_images = REQUESTS[0]._replace(images=[scene((1, 2, 3)), scene((4, 5, 6))])
    with pytest.raises(NotImplementedError, match="one image per question; request 0 has 2 images"):
        generate_until(wrapper, [two_images])


def test_vlmevalkit_model_answers_a_message_like_the_loop(wrapper, tmp_path):
    from focus_modules.integrations.vlmevalkit import FocusVLMEvalKitModel

    path = tmp_path / "scene.png"
    scene((200, 30, 30)).save(path)
    # VLMEvalKit's multiple-choice prompt (ImageMCQDataset.build_prompt)
    prompt = (
        "Question: What is the color of the square?\nOptions:\nA. red\nB. blue\n"
        "Please select the correct answer from the options above. \n"
    )
    model = FocusVLMEvalKitModel(wrapper, max_new_tokens=8)
    model.set_dump_image(lambda line: [str(path)])
    assert model.use_custom_prompt("HRBench4K") is False
    text = model.generate([{"type": "image", "value": str(path)}, {"type": "text", "value": prompt}], "HRBench4K")
    question = "Question: What is the color of the square?"
    [direct] = generate_until(wrapper, [HarnessRequest(prompt, [str(path)], question, 8)])
    assert text == direct.text
    record, expected = dict(model.records[0]), direct.log_record()
    assert record.pop("seconds") >= 0 and expected.pop("seconds") >= 0  # timings differ between runs
    assert record == expected
    [text_only] = generate_until(wrapper, [HarnessRequest("Name a colour.", [], "", 8)])
    assert model.generate("Name a colour.") == text_only.text
    assert model.records[-1]["method"] == "text-only"
    with pytest.raises(NotImplementedError, match=r"image and text messages; got \['video'\]"):
        model.generate([{"type": "video", "value": "clip.mp4"}, {"type": "text", "value": "What happens?"}])
