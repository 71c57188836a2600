import builtins
import json

import pytest
from eval_fixtures import (
    MME_OPTIONS,
    VSTAR_ITEMS,
    jpeg_bytes,
    make_hrbench,
    make_hrbench_parquet,
    make_mme,
    make_vstar,
    make_vstar_table,
)

from focus_modules.eval import ImageDecodeError, load_dataset, multiple_choice_text, read_vstar


def test_vstar_questions_options_letters_categories_boxes(tmp_path):
    questions = read_vstar(make_vstar(tmp_path), categories="all")
    assert [q.id for q in questions] == [
        "direct_attributes/sa_2",
        "direct_attributes/sa_10",
        "relative_position/sa_7",
        "counting/count_1",
    ]
    assert [q.category for q in questions] == ["attribute", "attribute", "spatial", "counting"]
    for q, (_, _, text, options, bbox, _) in zip(questions, VSTAR_ITEMS):
        assert q.question == text
        assert sorted(q.options) == sorted(options)
        # the first option of the file is the correct one, wherever it is shown
        assert q.options[q.letters.index(q.label)] == options[0]
        assert q.gt_boxes == tuple((x, y, x + w, y + h) for x, y, w, h in bbox)
    assert questions[2].gt_boxes == ((2.0, 2.0, 12.0, 12.0), (40.0, 30.0, 52.0, 40.0))
    assert questions[0].load_image().size == (64, 48)
    with pytest.raises(ImageDecodeError, match="sa_10.jpg"):
        questions[1].load_image()


def test_vstar_option_order_is_seeded_per_question(tmp_path):
    root = make_vstar(tmp_path)
    first, again = read_vstar(root, seed=0, categories="all"), read_vstar(root, seed=0, categories="all")
    assert [q.options for q in first] == [q.options for q in again]
    orders = {tuple(q.options for q in read_vstar(root, seed=s)) for s in range(8)}
    assert len(orders) > 1  # the seed changes the order
    # a question's order does not depend on the other questions
    (root / "counting" / "count_1.json").unlink()
    assert [q.options for q in read_vstar(root, seed=0, categories="all")] == [q.options for q in first[:3]]
    # the correct option is not always shown first
    labels = {q.label for s in range(8) for q in read_vstar(root, seed=s)}
    assert len(labels) > 1


def test_vstar_missing_image_becomes_decode_error_and_bad_layout_is_clear(tmp_path):
    root = make_vstar(tmp_path / "v")
    (root / "counting" / "count_1.jpg").unlink()
    with pytest.raises(ImageDecodeError, match="missing"):
        read_vstar(root, categories="all")[-1].load_image()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="direct_attributes/ and relative_position/"):
        read_vstar(tmp_path / "empty")


def test_vstar_reads_the_191_question_folders_unless_asked(tmp_path):
    root = make_vstar(tmp_path / "v")
    # the download's extra folders: OCR/ with upper-case .JPG images
    (root / "OCR").mkdir()
    (root / "OCR" / "ocr_1.json").write_text(json.dumps({"question": "What does it say?", "options": ["a", "b"]}))
    (root / "OCR" / "ocr_1.JPG").write_bytes(jpeg_bytes(20, 10, (0, 0, 0)))
    default = load_dataset("vstar", root)
    assert [q.category for q in default] == ["attribute", "attribute", "spatial"]
    every = load_dataset("vstar", root, categories="all")
    assert [q.id for q in every] == [q.id for q in default] + ["OCR/ocr_1", "counting/count_1"]
    assert every[3].load_image().size == (20, 10)  # found from the image side, any case of suffix
    assert [q.id for q in read_vstar(root, categories=["OCR", "direct_attributes"])] == [
        "OCR/ocr_1",
        "direct_attributes/sa_2",
        "direct_attributes/sa_10",
    ]
    with pytest.raises(
        FileNotFoundError,
        match="no question folder GPT4V-hard .*found: direct_attributes, "
        "relative_position, OCR, counting.*--categories",
    ):
        read_vstar(root, categories=["GPT4V-hard"])
    with pytest.raises(ValueError, match="categories select V\\*Bench folders"):
        load_dataset("hrbench", root, categories="all")
    (root / "direct_attributes" / "sa_2.json").write_text(json.dumps({"question": "q?"}))
    with pytest.raises(ValueError, match="'options'"):
        read_vstar(root)


def test_hrbench_rows_references_and_corrupt_image(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr_bench_4k.tsv"))
    assert [q.id for q in questions] == ["10", "11", "20", "21", "30"]
    assert [q.category for q in questions] == ["FSP", "FSP", "FCP", "FCP", "FSP"]
    assert questions[0].options == ("red", "blue", "green", "yellow")
    assert questions[1].options == ("blue", "green", "yellow", "red")
    assert [q.label for q in questions[:4]] == ["A", "D", "A", "D"]
    assert questions[0].question == "What color is object 10?\tplease answer"  # quoted field with a tab
    assert questions[1].groups == {"cycle": "cycle1"}
    # rows 11 and 21 share the images of rows 10 and 20 by index
    assert questions[1].load_image().size == questions[0].load_image().size == (40, 30)
    assert questions[3].load_image().size == (30, 40)
    with pytest.raises(ImageDecodeError, match="index 30"):
        questions[4].load_image()
    # a folder holding the one TSV works too
    assert [q.id for q in load_dataset("hrbench", tmp_path)] == [q.id for q in questions]


def test_hrbench_images_stay_on_disk(tmp_path):
    path = make_hrbench(tmp_path / "hr_bench_8k.tsv")
    questions = load_dataset("hrbench", path)
    path.write_bytes(path.read_bytes().replace(b"cycle0", b"cycle9"))  # same length: offsets still valid
    assert questions[0].load_image().size == (40, 30)  # read from the file now, not from memory


def test_hrbench_bad_files_are_clear(tmp_path):
    bad = tmp_path / "hr.tsv"
    bad.write_text("index\tquestion\n1\tq\n")
    with pytest.raises(ValueError, match="lacks columns .*answer"):
        load_dataset("hrbench", bad)
    with pytest.raises(FileNotFoundError, match="hr_bench_4k.tsv"):
        load_dataset("hrbench", tmp_path / "nowhere")
    dangling = make_hrbench(tmp_path / "d.tsv")
    dangling.write_bytes(dangling.read_bytes().replace(b"\t10\r\n", b"\t99\r\n"))
    with pytest.raises(ImageDecodeError, match="'99'"):
        load_dataset("hrbench", dangling)[1].load_image()


@pytest.mark.parametrize("fmt", ["json", "jsonl", "tsv", "parquet"])
def test_mme_rw_lite_formats(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    questions = load_dataset("mme-rw-lite", make_mme(tmp_path, fmt))
    assert [q.id for q in questions] == ["100", "101", "102"]
    assert [q.label for q in questions] == ["C", "A", "E"]
    assert questions[0].options == tuple(o[4:] for o in MME_OPTIONS)
    assert [q.category for q in questions] == [
        "Perception/OCR/text recognition",
        "Perception/AD/object_count",
        "Reasoning/AD/intention_pedestrian",
    ]
    assert questions[2].groups == {"subset": "Reasoning", "domain": "Reasoning/AD"}
    assert questions[0].load_image().size == (36, 24)
    assert questions[2].load_image().size == (38, 24)
    with pytest.raises(ImageDecodeError, match="index 101"):
        questions[1].load_image()


def test_mme_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_dataset("mme-rw-lite", tmp_path)


def test_mme_bad_layout_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="lmms-eval layout"):
        load_dataset("mme-rw-lite", tmp_path / "missing")
    (tmp_path / "x.json").write_text(json.dumps([{"index": 1, "question": "q"}]))
    with pytest.raises(ValueError, match="image column"):
        load_dataset("mme-rw-lite", tmp_path / "x.json")


def test_unknown_dataset_and_prompt_text():
    with pytest.raises(ValueError, match="mme-rw-lite"):
        load_dataset("coco", ".")
    assert multiple_choice_text("Color? ", ["red", "blue"]) == "Color?\n(A) red\n(B) blue"


def test_reads_the_synthetic_generator_output(tmp_path):
    from focus_modules.synthetic import write_vstar_layout

    paths = write_vstar_layout(tmp_path, n_per_family=1, seed=3, progress=False)
    questions = read_vstar(tmp_path, categories="all")
    assert [q.category for q in questions] == ["attribute", "spatial", "counting"]
    for q, path in zip(questions, paths):
        meta = json.loads(path.read_text())
        assert q.options[q.letters.index(q.label)] == meta["options"][0]
        assert q.gt_boxes == tuple((x, y, x + w, y + h) for x, y, w, h in meta["bbox"])
        assert q.load_image().size == tuple(meta["image_size"])


@pytest.mark.parametrize("fmt", ["parquet", "tsv"])
def test_vstar_tables_of_lmms_eval_and_vlmevalkit(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    data = make_vstar_table(tmp_path / ("vstar" if fmt == "parquet" else "vstar.tsv"), fmt)
    questions = load_dataset("vstar", data)
    assert [q.id for q in questions] == ["direct_attributes/0", "direct_attributes/1", "relative_position/2"]
    for q, (_, _, text, options, _, size) in zip(questions, VSTAR_ITEMS):
        assert q.question == text
        assert q.options == (options[1], options[0], *options[2:])  # the table's order, as given
        assert q.label == "B" and q.gt_boxes == ()
        assert q.load_image().size == size
    assert [q.category for q in load_dataset("vstar", data, categories="all")][-1] == "counting"
    with pytest.raises(ValueError, match="no question of category OCR .*found: direct_attributes"):
        load_dataset("vstar", data, categories=["OCR"])


def test_vstar_table_missing_columns_name_file_column_and_layout(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "vstar.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"text": "Q? (A) a (B) b", "category": "direct_attributes", "image": b"x"}]), bad
    )
    with pytest.raises(
        ValueError,
        match="vstar.parquet lacks column 'label' \\(it has: text, category\\); expected lmms-eval's V\\*Bench parquet",
    ):
        load_dataset("vstar", bad)
    pq.write_table(pa.Table.from_pylist([{"text": "Q? (A) a (B) b", "label": "A", "category": "x"}]), bad)
    with pytest.raises(ValueError, match="no image column"):
        load_dataset("vstar", bad)
    pq.write_table(
        pa.Table.from_pylist(
            [{"text": "Q? (B) a (A) b", "label": "A", "category": "direct_attributes", "image": b"x"}]
        ),
        bad,
    )
    with pytest.raises(ValueError, match="expected the question followed by \\(A\\), \\(B\\)"):
        load_dataset("vstar", bad, categories="all")
    tsv = tmp_path / "v.tsv"
    tsv.write_text("index\tquestion\tA\tB\tcategory\timage\n1\tq\ta\tb\tdirect_attributes\tx\n")
    with pytest.raises(ValueError, match="v.tsv lacks column 'answer'"):
        load_dataset("vstar", tsv)


def test_hrbench_parquet_of_lmms_eval(tmp_path):
    pytest.importorskip("pyarrow")
    tsv = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    parquet = load_dataset("hrbench", make_hrbench_parquet(tmp_path / "hrp"))
    assert [(q.id, q.options, q.label, q.category, dict(q.groups)) for q in parquet] == [
        (q.id, q.options, q.label, q.category, dict(q.groups)) for q in tsv
    ]
    assert parquet[1].load_image().size == (40, 30)
    with pytest.raises(ImageDecodeError, match="index 30"):
        parquet[4].load_image()
    # each row holds its own copy of the image: equal images are still recognised
    assert parquet[0].image_key == parquet[1].image_key != parquet[2].image_key == parquet[3].image_key
    assert tsv[0].image_key == parquet[0].image_key  # the digest of the same base64 text
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "hr_bench_8k.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"index": 1, "question": "q", "A": "a", "B": "b", "category": "single", "image": "x"}]),
        bad,
    )
    with pytest.raises(ValueError, match="hr_bench_8k.parquet lacks column 'answer' .*expected hr_bench_4k.tsv"):
        load_dataset("hrbench", bad)
