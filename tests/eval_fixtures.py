"""Tiny benchmark files in the three layouts of docs/design.md §11, and a fake answerer.

Shared by the eval tests and by tests/eval_worker.py (the process the crash and torchrun
tests start).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 4


def jpeg_bytes(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# V*Bench: (folder, name, question, options with the correct one first, bbox list, image size)
VSTAR_ITEMS = [
    (
        "direct_attributes",
        "sa_2",
        "What is the color of the cup?",
        ["red", "blue", "green", "white"],
        [[10, 12, 8, 6]],
        (64, 48),
    ),
    (
        "direct_attributes",
        "sa_10",
        "What is the material of the glove?",
        ["leather", "cotton", "rubber", "wool"],
        [[30, 20, 10, 10]],
        (64, 48),
    ),
    (
        "relative_position",
        "sa_7",
        "Is the dog on the left or right side of the cat?",
        ["left", "right"],
        [[2, 2, 10, 10], [40, 30, 12, 10]],
        (64, 48),
    ),
    ("counting", "count_1", "How many stars are there?", ["3", "2", "4", "5"], [[5, 5, 4, 4]], (32, 32)),
]


def make_vstar(root: Path, corrupt: str | None = "sa_10", extra: int = 0) -> Path:
    """A V*Bench folder with the items above plus ``extra`` more attribute questions;
    ``corrupt`` names the item whose JPEG is broken."""
    more = [
        (
            "direct_attributes",
            f"sa_{1000 + i}",
            f"What is the color of object {i}?",
            ["red", "blue", "green", "a very long option text"],
            [[1, 1, 5, 5]],
            (32, 24),
        )
        for i in range(extra)
    ]
    for folder, name, question, options, bbox, (w, h) in VSTAR_ITEMS + more:
        (root / folder).mkdir(parents=True, exist_ok=True)
        meta = {"target_object": ["thing"] * len(bbox), "bbox": bbox, "question": question, "options": options}
        (root / folder / f"{name}.json").write_text(json.dumps(meta))
        data = CORRUPT_JPEG if name == corrupt else jpeg_bytes(w, h, (200, 30, 30))
        (root / folder / f"{name}.jpg").write_bytes(data)
    return root


HRBENCH_HEADER = ["index", "question", "answer", "category", "A", "B", "C", "D", "cycle_category", "image"]


def make_hrbench(path: Path) -> Path:
    """Two images x 2 option rotations + one corrupt row; rows 11 and 21 refer to rows 10 and
    20 for their image, by index."""
    options = ["red", "blue", "green", "yellow"]
    rows = []
    for base, category, size in ((10, "single", (40, 30)), (20, "cross", (30, 40))):
        for shift in range(2):
            rotated = options[shift:] + options[:shift]
            image = b64(jpeg_bytes(*size, (10, 200, 10))) if shift == 0 else str(base)
            rows.append(
                [
                    base + shift,
                    f"What color is object {base}?\tplease answer",
                    "ABCD"[rotated.index("red")],
                    category,
                    *rotated,
                    f"cycle{shift}",
                    image,
                ]
            )
    rows.append([30, "A broken image?", "B", "single", *options, "cycle0", b64(CORRUPT_JPEG)])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(HRBENCH_HEADER)
        writer.writerows(rows)
    return path


MME_RECORDS = [
    dict(
        index=100,
        question="What does the sign say?",
        answer="C",
        category="Perception/OCR with Complex Context",
        **{"l2-category": "text recognition"},
    ),
    dict(
        index=101,
        question="How many cars are there?",
        answer="A",
        category="Perception/Autonomous_Driving",
        **{"l2-category": "object_count"},
    ),
    dict(
        index=102,
        question="What will the pedestrian do?",
        answer="E",
        category="Reasoning/Autonomous_Driving",
        **{"l2-category": "intention_pedestrian"},
    ),
]
MME_OPTIONS = ["(A) one", "(B) two", "(C) three", "(D) four", "(E) The image does not feature it"]


def mme_rows(corrupt_index: int | None = 101) -> list[dict]:
    rows = []
    for i, record in enumerate(MME_RECORDS):
        data = CORRUPT_JPEG if record["index"] == corrupt_index else jpeg_bytes(36 + i, 24, (0, 0, 200))
        rows.append({**record, "multi-choice options": list(MME_OPTIONS), "bytes": b64(data)})
    return rows


def make_mme(path: Path, fmt: str) -> Path:
    """MME-RealWorld-Lite in lmms-eval columns as ``json``, ``jsonl``, ``tsv`` or ``parquet``
    (``path`` is the folder; parquet goes to ``data/train-00000-of-00001.parquet``)."""
    rows = mme_rows()
    path.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        (path / "mme_rw_lite.json").write_text(json.dumps(rows))
    elif fmt == "jsonl":
        (path / "mme_rw_lite.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "tsv":
        header = list(rows[0])
        with open(path / "mme_rw_lite.tsv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(header)
            for r in rows:
                writer.writerow([json.dumps(r[k]) if k == "multi-choice options" else r[k] for k in header])
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        (path / "data").mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path / "data" / "train-00000-of-00001.parquet", row_group_size=2)
    else:
        raise ValueError(fmt)
    return path


@dataclass
class FakeRoi:
    box: tuple[float, float, float, float]
    relevance: float
    confidence: float | None


@dataclass
class FakeResult:
    answer: str
    targets: list[str]
    question_type: int
    rois: list[list[FakeRoi]]
    relevance_maps: list = field(default_factory=list)
    map_extents: list = field(default_factory=list)
    forward_passes: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    option_scores: list | None = None
    search_reused_from: int | None = None


class FakeAdapter:
    """The one adapter method the CLI uses: the answer prompt of a question."""

    @staticmethod
    def answer_prompt(question, options, num_images=1):
        return "\n".join([question, *(f"({'ABCDEFGH'[i]}) {o}" for i, o in enumerate(options)), "Letter?"])


class FakeAnswerer:
    """Answers with the letter of the option whose text is the longest (ties: first), so the
    answers depend on the option order; proposes two ROIs per question. Questions with equal
    ``search_keys`` share the first one's search, as FocusWrapper does (no search passes of
    their own); ``answer_scheme="logits"`` scores each option by its length.

    Args:
        delay: seconds to sleep per question (to kill a run mid-way).
        style: ``"letter"`` (``"B"``) or ``"sentence"`` (``"The answer is (B)."``).
    """

    def __init__(self, delay: float = 0.0, style: str = "letter"):
        self.adapter = FakeAdapter()
        self.delay = delay
        self.style = style
        self.calls = []
        self.kwargs = []

    def answer(
        self,
        images,
        questions,
        options=None,
        targets=None,
        method="focus",
        batch_size=None,
        answer_prompts=None,
        answer_scheme="generate",
        search_keys=None,
    ):
        assert len(images) == len(questions) == len(options)
        self.calls.append(list(questions))
        self.kwargs.append(dict(answer_prompts=answer_prompts, answer_scheme=answer_scheme, search_keys=search_keys))
        results, searched = [], {}
        for i, (image, opts) in enumerate(zip(images, options)):
            time.sleep(self.delay)
            best = max(range(len(opts)), key=lambda i: (len(opts[i]), -i))
            letter = "ABCDEFGH"[best]
            w, h = image.size
            rois = (
                []
                if method == "vanilla"
                else [[FakeRoi((0.0, 0.0, w / 2, h / 2), 0.9, 0.8), FakeRoi((w / 2, h / 2, w, h), 0.5, None)]]
            )
            leader = searched.setdefault(search_keys[i], i) if search_keys is not None else i
            passes = {"answer": 1} if method == "vanilla" else {"targets": 1, "relevance": 1, "verify": 2, "answer": 1}
            if leader != i:
                passes = {**passes, "targets": 0, "relevance": 0, "verify": 0}
            if answer_scheme == "logits":
                passes["answer"] = len(opts)
            results.append(
                FakeResult(
                    answer=letter if self.style == "letter" else f"The answer is ({letter}).",
                    targets=[] if method == "vanilla" else ["thing"],
                    question_type=1,
                    rois=rois,
                    forward_passes=passes,
                    timings={"answer": 0.01},
                    option_scores=[float(len(o)) for o in opts] if answer_scheme == "logits" else None,
                    search_reused_from=None if leader == i else leader,
                )
            )
        return results


def make_vstar_table(path: Path, fmt: str) -> Path:
    """The V*Bench items above as lmms-eval's parquet (``text`` with ``(A)`` lines, ``label``,
    ``category``, ``image`` struct, ``question_id``; ``path`` is the folder, written to
    ``data/test-00000-of-00001.parquet``) or a VLMEvalKit-style TSV (``path`` is the file).
    The correct option is shown second."""
    rows = []
    for number, (folder, _name, question, options, _bbox, size) in enumerate(VSTAR_ITEMS):
        shown = [options[1], options[0], *options[2:]]
        image = jpeg_bytes(*size, (30, 30, 200))
        if fmt == "parquet":
            text = question + "".join(f"\n({'ABCD'[i]}) {o}" for i, o in enumerate(shown))
            rows.append(
                {
                    "question_id": number,
                    "text": text,
                    "label": "B",
                    "category": folder,
                    "image": {"bytes": image, "path": None},
                }
            )
        else:
            rows.append(
                {
                    "index": number,
                    "question": question,
                    **dict(zip("ABCD", shown)),
                    "answer": "B",
                    "category": folder,
                    "image": b64(image),
                }
            )
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        (path / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path / "data" / "test-00000-of-00001.parquet")
        return path
    header = ["index", "question", "A", "B", "C", "D", "answer", "category", "image"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(header)
        writer.writerows([[row.get(k, "") for k in header] for row in rows])
    return path


def make_hrbench_parquet(path: Path) -> Path:
    """The HR-Bench rows of :func:`make_hrbench` as lmms-eval's parquet, every row with its own
    copy of its image (base64), in ``path/data/``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tsv = make_hrbench(path.with_suffix(".tsv"))
    with open(tsv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    images = {row["index"]: row["image"] for row in rows if len(row["image"]) > 64}
    for row in rows:
        row["image"] = images.get(row["image"], row["image"])
        row["index"] = int(row["index"])
    tsv.unlink()
    (path / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "data" / "hrbench_4k-00000.parquet", row_group_size=2)
    return path
