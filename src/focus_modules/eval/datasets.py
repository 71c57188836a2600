"""Readers for the benchmarks of the paper (Sec. 4.1, B), from files the user already has.

Every reader returns a list of :class:`Question` in a fixed order; images are decoded lazily,
one at a time, by :meth:`Question.load_image`. Layouts (DESIGN.md §5):

* **V*Bench** (``vstar``): a folder with ``direct_attributes/`` and ``relative_position/``,
  each holding ``NAME.jpg`` + ``NAME.json`` (``question``, ``options`` with the correct one
  first, ``target_object``, ``bbox`` as ``[x, y, w, h]``). Any other sub-folder with the same
  layout is read too, its name being the category. The options are shown in a seeded
  per-question order and the letter of the correct one is recorded.
* **HR-Bench 4K/8K** (``hrbench``): ``hr_bench_4k.tsv`` / ``hr_bench_8k.tsv`` with columns
  ``index, question, answer, category, A, B, C, D, cycle_category, image``; ``image`` is a
  base64 image or the ``index`` of an earlier row whose image it shares.
* **MME-RealWorld-Lite** (``mme-rw-lite``, lmms-eval layout): parquet files (``data/*.parquet``;
  needs ``pyarrow``), or a JSON / JSON-lines / TSV file, with columns ``index, question,
  multi-choice options, answer, category, l2-category, bytes`` (base64 image; ``image`` is
  accepted too, and option columns ``A``-``E`` instead of ``multi-choice options``).
"""

from __future__ import annotations

import ast
import json
import random
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from focus_modules.config import DATASETS
from focus_modules.eval.images import ImageDecodeError, decode_image_bytes, load_image_file, read_image_size
from focus_modules.eval.tsv import TsvTable

OPTION_LETTERS = "ABCDEFGH"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# V*Bench folder -> category name used in reports (Table 10: Attr, Spatial).
VSTAR_CATEGORIES = {"direct_attributes": "attribute", "relative_position": "spatial"}
# HR-Bench `category` values -> Table 10's task names.
HRBENCH_CATEGORIES = {"single": "FSP", "fsp": "FSP", "cross": "FCP", "fcp": "FCP"}
# MME-RealWorld domains (last part of `category`) -> the abbreviations of Table 2 / Table 9.
MME_DOMAINS = {
    "OCR with Complex Context": "OCR",
    "Remote Sensing": "RS",
    "Diagram and Table": "DT",
    "Monitoring": "MO",
    "Autonomous_Driving": "AD",
}


@dataclass(frozen=True)
class Question:
    """One multiple-choice benchmark question.

    Attributes:
        id: unique, stable identifier (used to resume runs).
        index: position in the dataset's order (0-based).
        question: the question text, without options.
        options: option texts in the order shown to the model, lettered A, B, ...
        label: letter of the correct option.
        category: task the question is reported under (V*: ``attribute``/``spatial``/folder
            name; HR-Bench: ``FSP``/``FCP``; MME: ``Subset/Domain/task``).
        groups: further groupings reported as averages, e.g. MME's
            ``{"subset": "Perception", "domain": "Perception/AD"}``.
        gt_boxes: ground-truth boxes ``(x1, y1, x2, y2)`` in pixels of the stored image
            (V*Bench only), clipped to the image.
        gt_boxes_clipped: how many of them reached outside the image in the dataset's file.
        image_source: where the image comes from, for messages.
    """

    id: str
    index: int
    question: str
    options: tuple[str, ...]
    label: str
    category: str
    image_source: str
    loader: Callable[[], Image.Image] = field(repr=False, compare=False)
    groups: Mapping[str, str] = field(default_factory=dict)
    gt_boxes: tuple[tuple[float, float, float, float], ...] = ()
    gt_boxes_clipped: int = 0

    @property
    def letters(self) -> str:
        """The option letters of this question, e.g. ``"ABCD"``."""
        return OPTION_LETTERS[: len(self.options)]

    def load_image(self) -> Image.Image:
        """Decode the image (RGB); raises :class:`ImageDecodeError` with the reason."""
        return self.loader()


def multiple_choice_text(question: str, options: tuple[str, ...] | list[str]) -> str:
    """The question followed by one ``(A) option`` line per option (DESIGN.md §5)."""
    lines = [question.strip()]
    lines += [f"({letter}) {option}" for letter, option in zip(OPTION_LETTERS, options)]
    return "\n".join(lines)


def load_dataset(name: str, path: str | Path, seed: int = 0) -> list[Question]:
    """Read benchmark ``name`` (``"vstar"``, ``"hrbench"``, ``"mme-rw-lite"``) from ``path``.

    Args:
        name: the benchmark.
        path: its local folder or file (see the module docstring for the layouts).
        seed: seed of V*Bench's per-question option order (ignored by the others, whose
            option order is part of the data).
    """
    if name == "vstar":
        return read_vstar(path, seed=seed)
    if name == "hrbench":
        return read_hrbench(path)
    if name == "mme-rw-lite":
        return read_mme_rw_lite(path)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


# ----------------------------------------------------------------------------------- V*Bench


def read_vstar(root: str | Path, seed: int = 0) -> list[Question]:
    """Read V*Bench from its folder layout (see the module docstring).

    Options are shuffled with ``random.Random(f"{seed}:{id}")``, so the order of a question
    does not depend on the others or on the Python hash seed.
    """
    root = Path(root)
    layout = (
        "expected a folder with sub-folders direct_attributes/ and relative_position/ (and any "
        "other category folder), each holding NAME.jpg + NAME.json pairs"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"V*Bench folder {root} does not exist; {layout}")
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.json"))]
    known = list(VSTAR_CATEGORIES)
    folders.sort(key=lambda p: (known.index(p.name) if p.name in known else len(known), p.name))
    if not folders:
        raise FileNotFoundError(f"no V*Bench questions under {root}: {layout}")
    questions = []
    clipped_total, clipped_files = 0, []
    for folder in folders:
        for meta_path in sorted(folder.glob("*.json"), key=lambda p: _natural_key(p.stem)):
            qid = f"{folder.name}/{meta_path.stem}"
            meta = _read_json(meta_path)
            for key in ("question", "options"):
                if key not in meta:
                    raise ValueError(f"{meta_path} has no {key!r} field; V*Bench JSON files hold "
                                     "'question', 'options' (correct first), 'target_object', 'bbox'")
            original = [str(o) for o in meta["options"]]
            if not 2 <= len(original) <= len(OPTION_LETTERS):
                raise ValueError(f"{meta_path}: expected 2..{len(OPTION_LETTERS)} options, got {len(original)}")
            order = list(range(len(original)))
            random.Random(f"{seed}:{qid}").shuffle(order)
            image_path = next((p for p in (meta_path.with_suffix(s) for s in IMAGE_SUFFIXES) if p.exists()),
                              meta_path.with_suffix(".jpg"))
            boxes = [_xywh_to_xyxy(box, meta_path) for box in meta.get("bbox", [])]
            size = read_image_size(image_path) if image_path.exists() else None
            inside = [_clip_box(box, size) for box in boxes] if size else boxes
            clipped = sum(a != b for a, b in zip(boxes, inside))
            if clipped:
                clipped_total += clipped
                clipped_files.append(meta_path.name)
            questions.append(Question(
                id=qid,
                index=len(questions),
                question=str(meta["question"]),
                options=tuple(original[i] for i in order),
                label=OPTION_LETTERS[order.index(0)],
                category=VSTAR_CATEGORIES.get(folder.name, folder.name),
                image_source=str(image_path),
                loader=_file_loader(image_path),
                gt_boxes=tuple(inside),
                gt_boxes_clipped=clipped,
            ))
    if clipped_total:
        warnings.warn(f"{clipped_total} V*Bench GT boxes reach outside their image and were clipped to it "
                      f"({', '.join(clipped_files[:5])}{', ...' if len(clipped_files) > 5 else ''}); the summary "
                      "counts them as gt_boxes_clipped", stacklevel=2)
    return questions


def _clip_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    width, height = size
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def _file_loader(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        if not path.exists():
            raise ImageDecodeError(f"{path}: image file missing (expected beside {path.with_suffix('.json').name})")
        return load_image_file(path, upright=False)

    return load


def _xywh_to_xyxy(box: Any, source: Path) -> tuple[float, float, float, float]:
    if not (isinstance(box, (list, tuple)) and len(box) == 4):
        raise ValueError(f"{source}: a bbox must be [x, y, w, h], got {box!r}")
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err


# ---------------------------------------------------------------------------------- HR-Bench


def read_hrbench(path: str | Path) -> list[Question]:
    """Read an HR-Bench TSV (``hr_bench_4k.tsv`` or ``hr_bench_8k.tsv``, or a folder holding
    exactly one ``.tsv``).

    Rows keep the file's option order (HR-Bench already rotates the options: 4 rows per
    image). An ``image`` field of at most 64 characters is the ``index`` of the row whose image
    this row shares.
    """
    layout = ("expected hr_bench_4k.tsv / hr_bench_8k.tsv with columns index, question, answer, "
              "category, A, B, C, D, cycle_category, image (base64 or the index of an earlier row)")
    tsv = _single_file(Path(path), (".tsv",), "HR-Bench", layout)
    table = TsvTable(tsv, lazy_columns=("image",))
    missing = {"index", "question", "answer", "category", "A", "B", "image"} - set(table.header)
    if missing:
        raise ValueError(f"{tsv} lacks columns {sorted(missing)}; {layout}")
    if not table.rows:
        raise ValueError(f"{tsv} holds a header but no questions; {layout}")
    letter_columns = [c for c in OPTION_LETTERS if c in table.header]
    row_of_index = {row["index"]: i for i, row in enumerate(table.rows)}

    def loader(row: int) -> Callable[[], Image.Image]:
        def load() -> Image.Image:
            source = f"{tsv.name} index {table.rows[row]['index']}"
            value = table.lazy_field(row, "image")
            if len(value) <= TsvTable.INLINE_CHARS:
                target = row_of_index.get(value.strip())
                if target is None or table.rows[target]["image"] is not None:
                    raise ImageDecodeError(f"{source}: image field {value!r} is neither base64 data nor "
                                           "the index of a row that holds an image")
                source = f"{source} (image of index {value.strip()})"
                value = table.lazy_field(target, "image")
            return decode_image_bytes(value, source, upright=False)

        return load

    questions = []
    for i, row in enumerate(table.rows):
        options = tuple(row[c] for c in letter_columns if row[c].strip() not in ("", "nan"))
        label = row["answer"].strip().upper()
        if label not in OPTION_LETTERS[: len(options)]:
            raise ValueError(f"{tsv} index {row['index']}: answer {row['answer']!r} is not one of the "
                             f"option letters {OPTION_LETTERS[: len(options)]}")
        category = HRBENCH_CATEGORIES.get(row["category"].strip().lower(), row["category"].strip())
        groups = {"cycle": row["cycle_category"]} if "cycle_category" in row else {}
        questions.append(Question(
            id=row["index"].strip(),
            index=i,
            question=row["question"],
            options=options,
            label=label,
            category=category,
            image_source=f"{tsv.name} index {row['index']}",
            loader=loader(i),
            groups=groups,
        ))
    return questions


# ------------------------------------------------------------------------ MME-RealWorld-Lite


MME_LAYOUT = (
    "expected the lmms-eval layout of MME-RealWorld-Lite: a folder with data/*.parquet (or the "
    "parquet, .json, .jsonl or .tsv file itself) with columns index, question, multi-choice "
    "options, answer, category, l2-category, bytes (base64 image)"
)


def read_mme_rw_lite(path: str | Path) -> list[Question]:
    """Read MME-RealWorld-Lite in the lmms-eval layout (see the module docstring).

    ``category`` (e.g. ``Perception/Autonomous_Driving``) gives the subset (Perception if it
    contains "perception", else Reasoning, as lmms-eval does) and the domain (its last part);
    ``l2-category`` is the task. A question's category is ``Subset/Domain/task`` with the
    domain abbreviated as in Table 2.
    """
    path = Path(path)
    if path.is_dir():
        parquet = sorted(path.glob("*.parquet")) + sorted(path.glob("data/*.parquet"))
        if parquet:
            records, loaders = _parquet_records(parquet)
        else:
            file = _single_file(path, (".json", ".jsonl", ".tsv"), "MME-RealWorld-Lite", MME_LAYOUT)
            records, loaders = _text_records(file)
    elif path.suffix == ".parquet":
        records, loaders = _parquet_records([path])
    elif path.exists():
        records, loaders = _text_records(path)
    else:
        raise FileNotFoundError(f"MME-RealWorld-Lite path {path} does not exist; {MME_LAYOUT}")
    if not records:
        raise ValueError(f"no questions found in {path}; {MME_LAYOUT}")
    questions = []
    for i, (record, loader) in enumerate(zip(records, loaders)):
        missing = {"index", "question", "answer", "category", "l2-category"} - set(record)
        if missing:
            raise ValueError(f"{path}: question {i} lacks fields {sorted(missing)}; {MME_LAYOUT}")
        options = _mme_options(record, path)
        label = str(record["answer"]).strip().strip("()").upper()
        if label not in OPTION_LETTERS[: len(options)]:
            raise ValueError(f"{path} index {record['index']}: answer {record['answer']!r} is not one of "
                             f"the option letters {OPTION_LETTERS[: len(options)]}")
        subset = "Perception" if "perception" in str(record["category"]).lower() else "Reasoning"
        domain_name = str(record["category"]).split("/")[-1].strip()
        domain = f"{subset}/{MME_DOMAINS.get(domain_name, domain_name)}"
        questions.append(Question(
            id=str(record["index"]).strip(),
            index=i,
            question=str(record["question"]),
            options=options,
            label=label,
            category=f"{domain}/{str(record['l2-category']).strip()}",
            image_source=f"{path.name} index {record['index']}",
            loader=loader,
            groups={"subset": subset, "domain": domain},
        ))
    return questions


_LETTER_PREFIX = re.compile(r"^\s*\(?([A-H])\)?[.:]?\s+")


def _mme_options(record: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    raw = record.get("multi-choice options")
    if raw is None:
        raw = [record[c] for c in OPTION_LETTERS if c in record and str(record[c]).strip() not in ("", "nan", "None")]
    elif isinstance(raw, str):
        raw = ast.literal_eval(raw) if raw.strip().startswith("[") else raw.splitlines()
    options = []
    for j, text in enumerate(str(o) for o in raw):
        match = _LETTER_PREFIX.match(text)
        if match and match.group(1) != OPTION_LETTERS[j]:
            raise ValueError(f"{path} index {record['index']}: option {j} is lettered {match.group(1)}, "
                             f"expected {OPTION_LETTERS[j]}")
        options.append(text[match.end():] if match else text.strip())
    if len(options) < 2:
        raise ValueError(f"{path} index {record['index']}: expected at least 2 options, got {options!r}")
    return tuple(options)


def _image_column(columns: list[str], source: Path) -> str:
    for name in ("bytes", "image"):
        if name in columns:
            return name
    raise ValueError(f"{source} has no image column ('bytes' or 'image'); {MME_LAYOUT}")


def _text_records(file: Path) -> tuple[list[dict], list[Callable[[], Image.Image]]]:
    if file.suffix == ".tsv":
        table = TsvTable(file, lazy_columns=("bytes", "image"))
        column = _image_column(table.header, file)
        def loader(row: int) -> Callable[[], Image.Image]:
            source = f"{file.name} index {table.rows[row]['index']}"
            return lambda: decode_image_bytes(table.lazy_field(row, column), source, upright=False)

        loaders = [loader(r) for r in range(len(table.rows))]
        return table.rows, loaders
    if file.suffix == ".jsonl":
        records = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif file.suffix == ".json":
        records = _read_json(file)
    else:
        raise ValueError(f"unsupported MME-RealWorld-Lite file {file}; {MME_LAYOUT}")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{file} must hold a list of question objects; {MME_LAYOUT}")
    if not records:
        return [], []  # "no questions found", below
    column = _image_column(list(records[0]) if records else [], file)
    loaders = [
        (lambda rec=rec: _decode_cell(rec.get(column), f"{file.name} index {rec.get('index')}"))
        for rec in records
    ]
    return [{k: v for k, v in rec.items() if k != column} for rec in records], loaders


def _parquet_records(files: list[Path]) -> tuple[list[dict], list[Callable[[], Image.Image]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading {files[0]} needs pyarrow: pip install pyarrow (or convert the data to JSON/TSV)"
        ) from None
    records, loaders = [], []
    cache = _RowGroupCache()
    for file in files:
        parquet = pq.ParquetFile(file)
        column = _image_column(parquet.schema_arrow.names, file)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=[c for c in parquet.schema_arrow.names if c != column])
            for offset, record in enumerate(table.to_pylist()):
                records.append(record)
                loaders.append(cache.loader(file, group, offset, column, f"{file.name} index {record.get('index')}"))
    return records, loaders


class _RowGroupCache:
    """Keeps the image column of the last parquet row group read, so that images are read in
    order without re-reading a row group per question."""

    def __init__(self):
        self._key = None
        self._column = None

    def loader(self, file: Path, group: int, offset: int, column: str, source: str) -> Callable[[], Image.Image]:
        def load() -> Image.Image:
            import pyarrow.parquet as pq

            if self._key != (file, group):
                self._column = pq.ParquetFile(file).read_row_group(group, columns=[column]).column(0)
                self._key = (file, group)
            return _decode_cell(self._column[offset].as_py(), source)

        return load


def _decode_cell(value: Any, source: str) -> Image.Image:
    """Decode a cell holding base64 text, raw bytes, or HF's ``{"bytes": ...}`` image struct."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, (str, bytes)) or not value:
        raise ImageDecodeError(f"{source}: no image data (got {type(value).__name__})")
    return decode_image_bytes(value, source, upright=False)


# ------------------------------------------------------------------------------------ shared


def _single_file(path: Path, suffixes: tuple[str, ...], name: str, layout: str) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{name} path {path} does not exist; {layout}")
    candidates = sorted(p for p in path.iterdir() if p.suffix in suffixes)
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise FileNotFoundError(f"{name}: expected exactly one {'/'.join(suffixes)} file in {path} (found: {found}); "
                                f"pass the file itself; {layout}")
    return candidates[0]
