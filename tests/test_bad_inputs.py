"""Bad and unusual inputs, as a new user would try them: each gives a clear one-line error
before the model is loaded, or a correct run with any fallback recorded. Never a traceback,
a silently wrong result, or a lost or duplicated result row.

The README's "Reliability" section counts these cases.
"""

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch
from eval_fixtures import HRBENCH_HEADER, VSTAR_ITEMS, FakeAnswerer, make_vstar
from PIL import Image

from focus_modules import FocusWrapper, cli
from focus_modules.eval import images as image_io
from focus_modules.eval import read_rows, run_eval
from focus_modules.eval.datasets import load_dataset
from focus_modules.eval.images import ImageDecodeError, decode_image_bytes, load_image_file
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT

SHIPPED = str(SHIPPED_CHECKPOINT)


def run_cli(argv, capsys):
    """``(exit code, stdout, stderr)`` of ``focus ARGV``; argparse's own errors exit with 2 too."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any weights are loaded: these errors must come first."""

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "load_model", load_model)


@pytest.fixture
def files(tmp_path):
    """An image, model folders that are wrong in one way each, and benchmark files with no
    questions."""
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    empty_folder = tmp_path / "empty_model"
    empty_folder.mkdir()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    bad_settings = tmp_path / "bad_settings"
    bad_settings.mkdir()
    shutil.copy(SHIPPED_CHECKPOINT / "config.json", bad_settings / "config.json")
    (bad_settings / "focus_config.json").write_text(json.dumps({"layerz": [3, 6]}))
    header_only = tmp_path / "hr_bench_4k.tsv"
    header_only.write_text("\t".join(HRBENCH_HEADER) + "\n")
    empty_mme = tmp_path / "mme.json"
    empty_mme.write_text("[]")
    return dict(
        image=str(image),
        empty_folder=str(empty_folder),
        bert=str(bert),
        bad_settings=str(bad_settings),
        missing_model=str(tmp_path / "models" / "nope"),
        header_only=str(header_only),
        empty_mme=str(empty_mme),
        missing=str(tmp_path / "missing.png"),
        out=str(tmp_path / "r.jsonl"),
        vstar=str(make_vstar(tmp_path / "vstar")),
    )


def ask(image, question="What is the color of the cup?", *extra, model=SHIPPED):
    return ["ask", image, question, "--model", model, *extra]


def evaluate(dataset, data, out, *extra):
    return ["eval", "--model", SHIPPED, "--dataset", dataset, "--data", data, "--out", out, "--no-progress", *extra]


# (case, argv from the files fixture, what the one-line error must say)
CLI_ERRORS = [
    ("empty question", lambda f: ask(f["image"], "   "), "the question is empty"),
    (
        "empty option",
        lambda f: ask(f["image"], "Which?", "--option", "red", "--option", ""),
        "--option must not be empty",
    ),
    ("negative --n-steps", lambda f: ask(f["image"], "Which?", "--n-steps", "-1"), "must be >= 0"),
    (
        "--n-steps not a number",
        lambda f: ask(f["image"], "Which?", "--n-steps", "many"),
        "expected an integer, got 'many'",
    ),
    ("--set without =", lambda f: ask(f["image"], "Which?", "--set", "k"), "FIELD=VALUE"),
    ("--set unknown field", lambda f: ask(f["image"], "Which?", "--set", "kk=3"), "no field 'kk'"),
    ("--set wrong type", lambda f: ask(f["image"], "Which?", "--set", "k=x"), "k expects int"),
    ("--set value out of range", lambda f: ask(f["image"], "Which?", "--set", "k=0"), "k must be >= 1"),
    ("--set s_min > s_max", lambda f: ask(f["image"], "Which?", "--set", "s_min=9"), "s_min <= s_max"),
    (
        "--set layers beyond the model",
        lambda f: ask(f["image"], "Which?", "--set", "layers=3,60"),
        "has 6 layers .*--set layers=3,6",
    ),
    ("--device gpu", lambda f: ask(f["image"], "Which?", "--device", "gpu"), "'gpu' is not a device"),
    ("--dtype unknown", lambda f: ask(f["image"], "Which?", "--dtype", "float8"), "invalid choice: 'float8'"),
    ("--model folder missing", lambda f: ask(f["image"], model=f["missing_model"]), "no such folder"),
    ("--model folder without config.json", lambda f: ask(f["image"], model=f["empty_folder"]), "holds no config.json"),
    (
        "--model of an unsupported class",
        lambda f: ask(f["image"], model=f["bert"]),
        r"no FOCUS adapter for BertModel; supported model families: .*llava-1.5 \(LlavaForConditionalGeneration\)",
    ),
    (
        "focus_config.json with an unknown field",
        lambda f: ask(f["image"], model=f["bad_settings"]),
        "focus_config.json: FocusConfig has no fields \\['layerz'\\]",
    ),
    ("image file missing", lambda f: ask(f["missing"]), "cannot read image file"),
    ("eval --limit 0", lambda f: evaluate("vstar", f["vstar"], f["out"], "--limit", "0"), "must be >= 1"),
    ("eval --batch-size 0", lambda f: evaluate("vstar", f["vstar"], f["out"], "--batch-size", "0"), "must be >= 1"),
    ("eval data missing", lambda f: evaluate("vstar", f["missing"], f["out"]), "does not exist"),
    (
        "eval HR-Bench header only",
        lambda f: evaluate("hrbench", f["header_only"], f["out"]),
        "holds a header but no questions",
    ),
    ("eval empty MME json", lambda f: evaluate("mme-rw-lite", f["empty_mme"], f["out"]), "no questions found"),
]
if not torch.cuda.is_available():
    CLI_ERRORS.append(
        (
            "--device cuda:0 without a GPU",
            lambda f: ask(f["image"], "Which?", "--device", "cuda:0"),
            "CUDA is not available",
        )
    )


@pytest.mark.parametrize("case,argv,message", CLI_ERRORS, ids=[case for case, _, _ in CLI_ERRORS])
def test_cli_error_is_one_line_before_loading(case, argv, message, files, no_weights, capsys):
    code, _, err = run_cli(argv(files), capsys)
    assert code == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # argparse prints its usage line first
    assert __import__("re").search(message, last), last


# --------------------------------------------------------------------------- images


def _png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def test_16_bit_grayscale_is_scaled_not_clipped():
    samples = np.full((4, 6), 128 * 257, dtype=np.uint16)  # mid grey in 16 bits
    decoded = decode_image_bytes(_png(Image.fromarray(samples)), "grey16.png")
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied_for_files_and_kept_for_benchmarks(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))  # top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate it 90 degrees clockwise
    path = tmp_path / "sideways.jpg"
    image.save(path, exif=exif, quality=100)
    upright = load_image_file(path)
    assert upright.size == (20, 40)
    assert sum(upright.getpixel((19, 0))) > 600  # the stored top-left is now top-right
    assert load_image_file(path, upright=False).size == (40, 20)  # the frame of benchmark GT boxes


def test_transparent_pixels_show_the_neutral_background_not_their_hidden_colour():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    decoded = decode_image_bytes(_png(rgba), "alpha.png")
    assert decoded.getpixel((0, 0)) == (128, 128, 128) and decoded.getpixel((1, 1)) == (0, 0, 255)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    decoded = decode_image_bytes(_png(palette, transparency=1), "palette.png")
    assert decoded.getpixel((2, 2)) == (128, 128, 128)


def test_images_above_pillows_bomb_limit_decode_and_above_ours_are_a_clear_error(monkeypatch):
    data = _png(Image.new("RGB", (40, 40), (9, 9, 9)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 1600 pixels
    assert decode_image_bytes(data, "big.png").size == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored
    monkeypatch.setattr(image_io, "MAX_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match=r"big.png: image of 40x40 .* above the decoding limit"):
        decode_image_bytes(data, "big.png")


def _jpeg(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def test_jpegs_above_our_limit_decode_at_a_reduced_scale_and_other_formats_are_a_clear_error(monkeypatch):
    image = Image.new("RGB", (203, 101), (200, 10, 10))  # 20503 pixels
    monkeypatch.setattr(image_io, "MAX_PIXELS", 3000)  # 1/2 scale (102 x 51) is still above: 1/4
    decoded = decode_image_bytes(_jpeg(image), "big.jpg")
    assert decoded.size == (51, 26) and image_io.reduced_scale(decoded) == (203 / 51, 101 / 26)
    assert decoded.getpixel((25, 13))[0] > 150  # the pixels, not a blank image
    assert image_io.reduced_scale(decode_image_bytes(_jpeg(Image.new("RGB", (40, 40))), "small.jpg")) is None
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: the factors follow the upright frame
    upright = decode_image_bytes(_jpeg(image, exif=exif), "rotated.jpg")
    assert upright.size == (26, 51) and image_io.reduced_scale(upright) == (101 / 26, 203 / 51)
    with pytest.raises(ImageDecodeError, match=r"big.png: .* \(only JPEGs can be decoded at a reduced scale\)"):
        decode_image_bytes(_png(image), "big.png")
    monkeypatch.setattr(image_io, "MAX_PIXELS", 100)
    with pytest.raises(ImageDecodeError, match=r"big.jpg: .* above the decoding limit .*, even at 1/8 scale"):
        decode_image_bytes(_jpeg(image), "big.jpg")


def test_rows_answered_on_a_reduced_decode_report_full_image_boxes_and_say_so(tmp_path, monkeypatch):
    questions = load_dataset("vstar", make_vstar(tmp_path / "vstar", corrupt=None))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 1000)  # the 64 x 48 and 32 x 32 images decode at 1/2
    run_eval(questions, FakeAnswerer(), tmp_path / "out.jsonl", dataset="vstar", progress=False)
    sizes = {question: size for _, _, question, _, _, size in VSTAR_ITEMS}
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == len(questions) == 3 and not any(row["error"] for row in rows)
    for row in rows:
        width, height = sizes[row["question"]]
        # FakeAnswerer's first ROI is the top-left quarter of the image it was given.
        assert row["rois"][0][0]["box"] == [0.0, 0.0, width / 2, height / 2]
        assert any("decoded at 1/2 scale" in note and "full image's pixels" in note for note in row["notes"])


@pytest.mark.parametrize(
    "data,match",
    [
        (b"\xff\xd8\xff\xe0 truncated", "cannot decode image"),
        (b"!!not base64!!", "invalid base64 image data"),
        (b"", "cannot decode image"),
    ],
)
def test_undecodable_bytes_are_a_clear_error(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image_bytes(data, "cell")


@pytest.mark.parametrize(
    "fixture,size", [("tiny_onevision", (2000, 20)), ("tiny_onevision", (55, 2000)), ("tiny_qwen2_5_vl", (4000, 10))]
)
def test_extreme_aspect_ratios_are_padded_and_said_so(fixture, size, request):
    model, processor = request.getfixturevalue(fixture)
    wrapper = FocusWrapper(model, processor)
    (result,) = wrapper.answer(
        [Image.new("RGB", size, (90, 120, 30))], ["What is the color of the cup?"], options=[["red", "blue"]]
    )
    assert len(result.notes) == 1 and f"image of {size[0]}x{size[1]} padded" in result.notes[0]
    width, height = size
    for box in [roi.box for rois in result.rois for roi in rois] + list(result.final_boxes):
        assert 0 <= box[0] <= box[2] <= width and 0 <= box[1] <= box[3] <= height


# ----------------------------------------------------------------------- eval runs


class FailingAnswerer(FakeAnswerer):
    """Raises for one question (as a processor does on an input it refuses), in a batch too."""

    def __init__(self, bad_question):
        super().__init__()
        self.bad_question = bad_question

    def answer(self, images, questions, **kwargs):
        if self.bad_question in questions:
            raise ZeroDivisionError("division by zero")
        return super().answer(images, questions, **kwargs)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_one_failing_question_is_an_error_row_and_the_run_goes_on(tmp_path, batch_size, capsys):
    questions = load_dataset("vstar", make_vstar(tmp_path / "v", corrupt=None, extra=3))
    bad = questions[2]
    out = tmp_path / "r.jsonl"
    summary = run_eval(
        questions, FailingAnswerer(bad.question), out, dataset="vstar", batch_size=batch_size, progress=False
    )
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == sorted(q.id for q in questions)  # none lost, none twice
    failed = [r for r in rows if r["error"]]
    assert [r["id"] for r in failed] == [bad.id] and failed[0]["error"] == "ZeroDivisionError: division by zero"
    assert summary["errors"] == 1 and summary["complete"]
    assert f"question {bad.id}: ZeroDivisionError" in capsys.readouterr().err
    # A rerun neither dies on that question nor answers anything twice.
    run_eval(questions, FailingAnswerer(bad.question), out, dataset="vstar", batch_size=batch_size, progress=False)
    assert len(read_rows(out)) == len(questions)


def test_vstar_gt_boxes_outside_the_image_are_clipped_counted_and_warned(tmp_path):
    root = make_vstar(tmp_path / "v", corrupt=None)
    meta_path = root / "direct_attributes" / "sa_2.json"
    meta = json.loads(meta_path.read_text())
    meta["bbox"] = [[50, 40, 30, 30]]  # the image is 64 x 48
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="1 V\\*Bench GT boxes reach outside their image"):
        questions = load_dataset("vstar", root)
    question = next(q for q in questions if q.id == "direct_attributes/sa_2")
    assert question.gt_boxes == ((50.0, 40.0, 64.0, 48.0),) and question.gt_boxes_clipped == 1
    summary = run_eval(questions, FakeAnswerer(), tmp_path / "r.jsonl", dataset="vstar", progress=False)
    assert summary["gt_boxes_clipped"] == 1


def test_hrbench_header_only_is_an_error_not_an_empty_complete_run(tmp_path):
    path = tmp_path / "hr_bench_4k.tsv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle, delimiter="\t").writerow(HRBENCH_HEADER)
    with pytest.raises(ValueError, match="holds a header but no questions"):
        load_dataset("hrbench", path)


# ------------------------------------------------------- the shipped model, end to end


def test_shipped_model_runs_without_settings_and_refuses_an_overlong_question(files, capsys):
    """The shipped checkpoint's focus_config.json gives its layers: no --set is needed."""
    code, out, err = run_cli(
        ask(files["image"], "What is the color of the cup?", "--json", "--n-steps", "1", "--device", "cpu"), capsys
    )
    assert code == 0, err
    printed = json.loads(out)
    shipped = json.loads((SHIPPED_CHECKPOINT / "focus_config.json").read_text())
    assert printed["config"]["layers"] == shipped["layers"] != [14, 32] and printed["config"]["n_steps"] == 1
    context = json.loads((SHIPPED_CHECKPOINT / "config.json").read_text())["text_config"]["max_position_embeddings"]
    code, _, err = run_cli(ask(files["image"], "cup " * (context + 100), "--device", "cpu"), capsys)
    assert code == 2 and f"exceeds the model's context of {context} tokens" in err and "Traceback" not in err
