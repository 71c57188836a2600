import pytest
from eval_fixtures import FakeAnswerer, make_hrbench, make_mme, make_vstar

from focus_modules.eval import load_dataset, read_rows, run_eval, summarize
from focus_modules.eval.protocols import lmms_eval_letter, lmms_eval_prompt


def test_lmms_eval_prompts_per_dataset():
    assert lmms_eval_prompt("vstar", "What is the color of the cup? ", ["red", "blue"]) == (
        "What is the color of the cup?\nA. red\nB. blue\nAnswer with the option's letter from the given choices "
        "directly."
    )
    assert lmms_eval_prompt("hrbench", " Which sign? ", ["stop", "yield", "go", "slow"]) == (
        "Which sign?\nA. stop\nB. yield\nC. go\nD. slow\nAnswer the option letter directly."
    )
    assert lmms_eval_prompt("mme-rw-lite", "How many cars?", ["one", "two"]) == (
        "How many cars? The choices are listed below:\n(A) one\n(B) two\nSelect the best answer to the above "
        "multiple-choice question based on the image. Respond with only the letter (A, B, C, D, or E) of the "
        "correct option.\nThe best answer is: "
    )
    with pytest.raises(ValueError, match="no lmms-eval prompt"):
        lmms_eval_prompt("coco", "q", ["a"])


OPTIONS = ["red", "blue", "green", "yellow"]


@pytest.mark.parametrize(
    "dataset, answer, letter",
    [
        ("vstar", "B", "B"),
        ("vstar", "(c) green", "C"),  # upper-cased first, then "(X)"
        ("vstar", "The answer is d", "D"),
        ("vstar", "I pick A here", "A"),
        ("vstar", "Blue", "B"),  # a letter at the start wins, as in lmms-eval
        ("vstar", "none of these", None),
        ("hrbench", "A", "A"),
        ("hrbench", "(B) blue.", "B"),
        ("hrbench", "It is green", "C"),  # no letter: the only option text the answer contains
        ("hrbench", "red or blue", None),  # two option texts
        ("hrbench", "A or B", None),  # two letters
        ("hrbench", "Z", None),
        ("hrbench", "Cannot determine the answer. A", None),
        ("mme-rw-lite", "The best answer is (C)", "C"),
        ("mme-rw-lite", "Bus", "B"),  # the first capital A-E anywhere, as in lmms-eval
        ("mme-rw-lite", "", "A"),  # an empty answer lies inside "(a)"
        ("mme-rw-lite", "there are many small things in this picture that i cannot count at all", None),
        ("mme-rw-lite", None, None),
    ],
)
def test_lmms_eval_extraction(dataset, answer, letter):
    assert lmms_eval_letter(dataset, answer, OPTIONS) == letter


def test_lmms_eval_protocol_sends_the_harness_prompt_and_scores_both_ways(tmp_path):
    questions = load_dataset("mme-rw-lite", make_mme(tmp_path / "mme", "json"))
    answerer = FakeAnswerer(style="sentence")  # "The answer is (B)."
    summary = run_eval(
        questions, answerer, tmp_path / "lmms.jsonl", dataset="mme-rw-lite", protocol="lmms-eval", progress=False
    )
    rows = read_rows(tmp_path / "lmms.jsonl")
    sent = [p for kwargs in answerer.kwargs for p in kwargs["answer_prompts"]]
    assert sent == [r["prompt"] for r in rows if not r["error"]]
    assert sent[0] == lmms_eval_prompt("mme-rw-lite", questions[0].question, questions[0].options)
    assert all(r["protocol"] == "lmms-eval" and r["answer_scheme"] == "generate" for r in rows)
    answered = [r for r in rows if not r["error"]]
    assert all(not r["correct"] for r in answered)  # strict: a sentence is not the letter
    # the fake answers with the longest option: "The image does not feature it" = E
    assert [r["answer_lmms_eval"] for r in answered] == ["E", "E"]
    assert [r["correct_lmms_eval"] for r in answered] == [r["label"] == "E" for r in answered]
    assert summary["protocol"] == "lmms-eval" and summary["accuracy"] == 0
    assert summary["accuracy_lmms_eval"] == pytest.approx(100 * sum(r["correct_lmms_eval"] for r in rows) / 3)
    assert summary["per_category"]["Reasoning/AD/intention_pedestrian"]["accuracy_lmms_eval"] == 100
    # the paper protocol sends no prompt of its own: the adapter writes it
    answerer = FakeAnswerer()
    run_eval(
        questions,
        answerer,
        tmp_path / "paper.jsonl",
        dataset="mme-rw-lite",
        progress=False,
        prompt_of=answerer.adapter.answer_prompt,
    )
    assert answerer.kwargs[0]["answer_prompts"] is None
    assert read_rows(tmp_path / "paper.jsonl")[0]["prompt"].endswith("Letter?")
    # another protocol is another run
    with pytest.raises(ValueError, match="protocol: 'paper' in the file, 'lmms-eval' now"):
        run_eval(
            questions,
            FakeAnswerer(),
            tmp_path / "paper.jsonl",
            dataset="mme-rw-lite",
            protocol="lmms-eval",
            progress=False,
        )


def test_logits_scheme_is_recorded_and_paper_only(tmp_path):
    questions = load_dataset("vstar", make_vstar(tmp_path / "v"))
    answerer = FakeAnswerer()
    summary = run_eval(
        questions, answerer, tmp_path / "r.jsonl", dataset="vstar", answer_scheme="logits", progress=False
    )
    assert answerer.kwargs[0]["answer_scheme"] == "logits"
    row = read_rows(tmp_path / "r.jsonl")[0]
    assert row["answer_scheme"] == "logits" and row["option_scores"] == [float(len(o)) for o in row["options"]]
    assert row["forward_passes"]["answer"] == len(row["options"])
    assert summary["answer_scheme"] == "logits" and summary["run"]["answer_scheme"] == "logits"
    with pytest.raises(ValueError, match="paper protocol"):
        run_eval(
            questions,
            FakeAnswerer(),
            tmp_path / "x.jsonl",
            dataset="vstar",
            answer_scheme="logits",
            protocol="lmms-eval",
            progress=False,
        )


def test_hrbench_rotations_share_one_search_and_cycles_are_averaged(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    # rows 10/11 and 20/21 are the same image and question with rotated options
    assert questions[0].image_key == questions[1].image_key != questions[2].image_key == questions[3].image_key
    answerer = FakeAnswerer()
    summary = run_eval(questions, answerer, tmp_path / "r.jsonl", dataset="hrbench", progress=False)
    # batch_size 1, yet each pair of rotations went to the model in one call, with one search key
    assert [len(c) for c in answerer.calls] == [2, 2]
    keys = answerer.kwargs[0]["search_keys"]
    assert keys[0] == keys[1]
    rows = {r["id"]: r for r in read_rows(tmp_path / "r.jsonl")}
    assert rows["10"]["fp_search"] == 3 and rows["10"]["search_reused_from"] is None
    assert rows["11"]["fp_search"] == 0 and rows["11"]["fp_search_unshared"] == 3
    assert rows["11"]["search_reused_from"] == "10"
    assert summary["fp_search_mean"] == pytest.approx(6 / 4)  # spent: 2 searches for 4 answered rows
    assert summary["fp_search_unshared_mean"] == 3  # each row's own search, the paper's figure
    # vanilla has no search to share
    vanilla = FakeAnswerer()
    run_eval(questions, vanilla, tmp_path / "v.jsonl", dataset="hrbench", method="vanilla", progress=False)
    assert [len(c) for c in vanilla.calls] == [1, 1, 1, 1] and vanilla.kwargs[0]["search_keys"] is None


def test_cycle_mean_averages_each_cycles_accuracy():
    def row(cycle, category, correct):
        return {
            "id": f"{cycle}{category}{correct}",
            "category": category,
            "correct": correct,
            "correct_lenient": correct,
            "correct_lmms_eval": not correct,
            "error": None,
            "forward_passes": {},
            "seconds": 1.0,
            "groups": {"cycle": cycle},
        }

    # cycle 0: 3 FSP rows (2 right) + 1 FCP (right); cycle 1: 1 FSP (wrong) + 1 FCP (wrong)
    rows = [
        row("c0", "FSP", True),
        row("c0", "FSP", True),
        row("c0", "FSP", False),
        row("c0", "FCP", True),
        row("c1", "FSP", False),
        row("c1", "FCP", False),
    ]
    s = summarize(rows)
    assert s["accuracy"] == pytest.approx(100 * 3 / 6)  # the plain row mean
    cycles = s["cycle_mean"]
    assert cycles["n_cycles"] == 2
    assert cycles["accuracy"] == pytest.approx((75 + 0) / 2)
    assert cycles["accuracy_lmms_eval"] == pytest.approx((25 + 100) / 2)
    assert cycles["per_category"]["FSP"]["accuracy"] == pytest.approx((100 * 2 / 3 + 0) / 2)
    assert cycles["per_category"]["FCP"]["accuracy"] == pytest.approx(50)
    assert summarize([{**r, "groups": {}} for r in rows])["cycle_mean"] is None
