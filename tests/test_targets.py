import pytest

from focus_modules.targets import (
    TARGET_EXAMPLES,
    is_counting,
    keyword_targets,
    normalize_targets,
    parse_targets,
    question_type,
    target_prompt,
)


def test_prompt_holds_the_few_shot_examples_and_ends_open():
    prompt = target_prompt("  What is the color of the cup?  ")
    for question, objects in TARGET_EXAMPLES:
        assert f"Question: {question}\nObjects: {objects}\n" in prompt
    assert prompt.endswith("Question: What is the color of the cup?\nObjects:")
    kinds = [objects for _, objects in TARGET_EXAMPLES]
    assert any("," in k for k in kinds) and any(k.startswith("all ") for k in kinds)


@pytest.mark.parametrize(
    "reply, question, expected",
    [
        ("red car, white truck", "Is the red car left of the white truck?", ["red car", "white truck"]),
        # words the question lacks: the question's own phrase with the same head noun
        (" red car , white truck \nQuestion: what", "Is the red car left of the truck?", ["red car", "truck"]),
        ("Objects: umbrella.", "What is the color of the umbrella?", ["umbrella"]),
        ('"dog"; (cat)', "Is the dog next to the cat?", ["dog", "cat"]),
        ("all birds", "How many birds are on the roof?", ["all birds"]),
        ("woman's bag", "What color is the woman's bag?", ["woman's bag"]),
        ("cup, cup, Cup", "What is the color of the cup?", ["cup"]),
        ("\n\n  glove\n", "What is the glove made of?", ["glove"]),
        ("the car", "What is the color of the cars?", ["the car"]),  # plural folding
        ("baseball glove", "What is the color of the glove?", ["glove"]),
        ("blue diamond", "What is the mark color of the red diamond?", ["red diamond"]),
        ("red stars", "How many red stars are there in the image?", ["red stars"]),
        ("all blue stars", "How many red stars are there?", ["all red stars"]),
        ("wooden bench", "Where is bench?", ["wooden bench"]),  # no phrase of the question to ground to
        # a near miss with another head noun names another object
        ("red triangle", "What is the mark color of the red diamond?", []),
        # Nothing usable: invented objects, none, empty, a sentence.
        ("elephant", "What is the color of the cup?", []),
        ("none", "What is the color of the cup?", []),
        ("", "What is the color of the cup?", []),
        ("the cup that is on the table next to the", "What is the color of the cup?", []),
    ],
)
def test_parse_targets(reply, question, expected):
    assert parse_targets(reply, question) == expected


@pytest.mark.parametrize(
    "question, expected",
    [
        ("What is the color of the umbrella?", ["umbrella"]),
        ("Is the red car on the left or right side of the white truck?", ["red car", "white truck"]),
        ("What is the relative position of the ball to the bench?", ["ball", "bench"]),
        ("How many birds are on the roof?", ["all birds"]),
        ("What is the number of people in the image?", ["all people"]),
        ("What color is it?", []),
    ],
)
def test_keyword_targets(question, expected):
    assert keyword_targets(question) == expected


def test_question_type_and_normalisation():
    assert is_counting("How many cars?") and is_counting("Count the dogs.") and is_counting("the number of cups")
    assert not is_counting("Which country is this?")
    assert question_type("What is the color of the cup?", ["cup"]) == 1
    assert question_type("What is the color of the cups?", ["all cups"]) == 2
    assert question_type("How many cups are there?", ["cups"]) == 2
    assert normalize_targets(["all the birds", "a red car", "Red car", "  "]) == (["birds", "red car"], 2)
    assert normalize_targets(["cup"]) == (["cup"], 1)
