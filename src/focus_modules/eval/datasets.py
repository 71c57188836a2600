"""Readers for the benchmarks of the paper (Sec. 4.1, B), from files the user already has.

Every reader returns a list of :class:`Question` in a fixed order; images are decoded lazily,
one at a time, by :meth:`Question.load_image`. Layouts (docs/design.md §11):

* **V*Bench** (``vstar``): a folder with ``direct_attributes/`` and ``relative_position/``,
  each holding ``NAME.jpg`` + ``NAME.json`` (``question``, ``options`` with the correct one
  first, ``target_object``, ``bbox`` as ``[x, y, w, h]``). These two folders are the 191
  questions of the paper and of every harness; other sub-folders of the same layout (the
  download's ``OCR/`` and ``GPT4V-hard/``, the synthetic set's ``counting/``) are read only
  when asked for (``categories``). The options are shown in a seeded per-question order and
  the letter of the correct one is recorded. Also read: lmms-eval's parquet copy (``text``
  with ``(A)`` option lines, ``label``, ``category``, ``image``) and VLMEvalKit-style TSVs
  (``question``, ``A``..., ``answer``, ``category``, ``image``), in their own option order.
* **HR-Bench 4K/8K** (``hrbench``): ``hr_bench_4k.tsv`` / ``hr_bench_8k.tsv`` with columns
  ``index, question, answer, category, A, B, C, D, cycle_category, image``; ``image`` is a
  base64 image or the ``index`` of an earlier row whose image it shares. lmms-eval's parquet
  copy, with the same columns, is read too.
* **MME-RealWorld-Lite** (``mme-rw-lite``, lmms-eval layout): parquet files (``data/*.parquet``;
  needs ``pyarrow``), or a JSON / JSON-lines / TSV file, with columns ``index, question,
  multi-choice options, answer, category, l2-category, bytes`` (base64 image; ``image`` is
  accepted too, and option columns ``A``-``E`` instead of ``multi-choice options``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from focus_modules.adapters.base import OPTION_LETTERS as ADAPTER_OPTION_LETTERS
from focus_modules.adapters.base import option_lines
from focus_modules.adapters.views import clip_box
from focus_modules.config import DATASETS
from focus_modules.eval.images import ImageDecodeError, decode_image_bytes, load_image_file, read_image_size
from focus_modules.eval.tsv import TsvTable

# Benchmark questions have 2 to 8 options, lettered as the adapters letter them.
OPTION_LETTERS = ADAPTER_OPTION_LETTERS[:8]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# V*Bench folder -> category name used in reports (Table 10: Attr, Spatial). These two folders
# are the benchmark's 191 questions; other folders are read only when asked for.
VSTAR_CATEGORIES = {"direct_attributes": "attribute", "relative_position": "spatial"}
VSTAR_DEFAULT_FOLDERS = tuple(VSTAR_CATEGORIES)
ALL_CATEGORIES = "all"
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
        image_key: equal for questions on the same image (HR-Bench's option rotations share
            one); defaults to ``image_source``.
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
    image_key: str = ""
    gt_boxes_clipped: int = 0

    def __post_init__(self):
        if not self.image_key:
            object.__setattr__(self, "image_key", self.image_source)

    @property
    def letters(self) -> str:
        """The option letters of this question, e.g. ``"ABCD"``."""
        return OPTION_LETTERS[: len(self.options)]

    def load_image(self) -> Image.Image:
        """Decode the image (RGB); raises :class:`ImageDecodeError` with the reason."""
        return self.loader()


def multiple_choice_text(question: str, options: tuple[str, ...] | list[str]) -> str:
    """The question followed by one ``(A) option`` line per option (docs/design.md §11)."""
    return "\n".join([question.strip(), *option_lines(options)])


def load_dataset(
    name: str, path: str | Path, seed: int = 0, categories: str | Sequence[str] | None = None
) -> list[Question]:
    """Read benchmark ``name`` (``"vstar"``, ``"hrbench"``, ``"mme-rw-lite"``) from ``path``.

    Args:
        name: the benchmark.
        path: its local folder or file (see the module docstring for the layouts).
        seed: seed of V*Bench's per-question option order (ignored by the others, whose
            option order is part of the data).
        categories: V*Bench only: the category folders to read; ``None`` reads
            ``direct_attributes`` and ``relative_position`` (the 191 questions), ``"all"`` every
            folder.
    """
    if categories is not None and name != "vstar":
        raise ValueError(f"categories select V*Bench folders; {name} has none to select")
    if name == "vstar":
        return read_vstar(path, seed=seed, categories=categories)
    if name == "hrbench":
        return read_hrbench(path)
    if name == "mme-rw-lite":
        return read_mme_rw_lite(path)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


# ----------------------------------------------------------------------------------- V*Bench


def read_vstar(root: str | Path, seed: int = 0, categories: str | Sequence[str] | None = None) -> list[Question]:
    """Read V*Bench from its folder layout (see the module docstring), or from a table: lmms-eval's
    parquet copy or a VLMEvalKit-style TSV (:func:`read_vstar_table`).

    In the folder layout, options are shuffled with ``random.Random(f"{seed}:{id}")``, so the
    order of a question does not depend on the others or on the Python hash seed.

    Args:
        root: the V*Bench folder (or table file / folder of parquet files).
        seed: seed of the option order (folder layout only; a table gives its own order).
        categories: folder names to read, in this order; ``None``: ``direct_attributes`` and
            ``relative_position`` (the benchmark's 191 questions); ``"all"``: every folder
            holding questions (the known two first, then the others by name).
    """
    root = Path(root)
    layout = (
        "expected a folder with sub-folders direct_attributes/ and relative_position/, each holding "
        "NAME.jpg + NAME.json pairs (or lmms-eval's V*Bench parquet, or a VLMEvalKit V*Bench TSV)"
    )
    if _parquet_files(root) or root.suffix == ".tsv":
        return read_vstar_table(root, categories)
    if not root.is_dir():
        raise FileNotFoundError(f"V*Bench folder {root} does not exist; {layout}")
    available = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.json"))]
    known = list(VSTAR_CATEGORIES)
    available.sort(key=lambda p: (known.index(p.name) if p.name in known else len(known), p.name))
    if not available:
        raise FileNotFoundError(f"no V*Bench questions under {root}: {layout}")
    folders = _vstar_folders(root, available, categories)
    questions = []
    clipped_total, clipped_files = 0, []
    for folder in folders:
        images = _images_by_stem(folder)
        for meta_path in sorted(folder.glob("*.json"), key=lambda p: _natural_key(p.stem)):
            qid = f"{folder.name}/{meta_path.stem}"
            meta = _read_json(meta_path)
            for key in ("question", "options"):
                if key not in meta:
                    raise ValueError(
                        f"{meta_path} has no {key!r} field; V*Bench JSON files hold "
                        "'question', 'options' (correct first), 'target_object', 'bbox'"
                    )
            original = [str(o) for o in meta["options"]]
            if not 2 <= len(original) <= len(OPTION_LETTERS):
                raise ValueError(f"{meta_path}: expected 2..{len(OPTION_LETTERS)} options, got {len(original)}")
            order = list(range(len(original)))
            random.Random(f"{seed}:{qid}").shuffle(order)
            image_path = images.get(meta_path.stem, meta_path.with_suffix(".jpg"))
            boxes = [_xywh_to_xyxy(box, meta_path) for box in meta.get("bbox", [])]
            size = read_image_size(image_path) if image_path.exists() else None
            inside = [clip_box(box, *size) for box in boxes] if size else boxes
            clipped = sum(a != b for a, b in zip(boxes, inside))
            if clipped:
                clipped_total += clipped
                clipped_files.append(meta_path.name)
            questions.append(
                Question(
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
                )
            )
    if clipped_total:
        warnings.warn(
            f"{clipped_total} V*Bench GT boxes reach outside their image and were clipped to it "
            f"({', '.join(clipped_files[:5])}{', ...' if len(clipped_files) > 5 else ''}); the summary "
            "counts them as gt_boxes_clipped",
            stacklevel=2,
        )
    return questions


VSTAR_TABLE_LAYOUT = (
    "expected lmms-eval's V*Bench parquet (columns text: the question with (A) ... option lines, label: the "
    "correct letter, category, image) or a VLMEvalKit-style TSV (columns index, question, A, B, ..., answer, "
    "category, image)"
)
_OPTION_MARK = re.compile(r"\(([A-H])\)")


def read_vstar_table(path: str | Path, categories: str | Sequence[str] | None = None) -> list[Question]:
    """V*Bench from a table, options in the table's order with its correct letter.

    * lmms-eval's parquet (``lmms-lab/vstar-bench``; a ``.parquet`` file or a folder with
      ``*.parquet`` / ``data/*.parquet``): ``text`` (question, then ``(A) option`` lines),
      ``label``, ``category``, ``image`` (bytes), ``question_id`` (optional).
    * a VLMEvalKit-style ``.tsv``: ``index``, ``question``, ``A``, ``B``, ..., ``answer``,
      ``category``, ``image`` (base64).

    ``category`` (``direct_attributes`` / ``relative_position``) is filtered as the folder
    layout's sub-folders are (see :func:`read_vstar`). No GT boxes.
    """
    path = Path(path)
    parquet = _parquet_files(path)
    if parquet:
        records, loaders = _parquet_records(parquet, VSTAR_TABLE_LAYOUT)
        source = parquet[0]
    elif path.is_file():
        records, loaders = _text_records(path, VSTAR_TABLE_LAYOUT)
        source = path
    else:
        raise FileNotFoundError(f"V*Bench table {path} does not exist; {VSTAR_TABLE_LAYOUT}")
    if not records:
        raise ValueError(f"{source} holds no questions; {VSTAR_TABLE_LAYOUT}")
    columns = list(records[0])
    lmms_eval = "text" in columns or "label" in columns
    _require_columns(
        columns,
        ("text", "label", "category") if lmms_eval else ("index", "question", "A", "B", "answer", "category"),
        source,
        VSTAR_TABLE_LAYOUT,
    )
    found = list(dict.fromkeys(str(r["category"]) for r in records))
    wanted = (
        found
        if categories == ALL_CATEGORIES
        else list(
            VSTAR_DEFAULT_FOLDERS if categories is None else [categories] if isinstance(categories, str) else categories
        )
    )
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ValueError(
            f"{source} has no question of category {', '.join(missing)} (found: {', '.join(found)}); "
            f"choose with --categories (e.g. --categories {ALL_CATEGORIES})"
        )
    questions = []
    for name in wanted:
        for position, (record, loader) in enumerate(zip(records, loaders)):
            if str(record["category"]) != name:
                continue
            if lmms_eval:
                key = record.get("question_id", position)
                question, options = _split_options(str(record["text"]), f"{source} question {key}")
            else:
                key = record["index"]
                question = str(record["question"])
                options = tuple(
                    str(record[c])
                    for c in OPTION_LETTERS
                    if c in record and str(record[c]).strip() not in ("", "nan", "None")
                )
            label = str(record["label" if lmms_eval else "answer"]).strip().strip("()").upper()
            if label not in OPTION_LETTERS[: len(options)]:
                raise ValueError(
                    f"{source} question {key}: correct letter {label!r} is not one of the option "
                    f"letters {OPTION_LETTERS[: len(options)]}"
                )
            questions.append(
                Question(
                    id=f"{name}/{key}",
                    index=len(questions),
                    question=question,
                    options=options,
                    label=label,
                    category=VSTAR_CATEGORIES.get(name, name),
                    image_source=f"{source.name} question {key}",
                    loader=loader,
                )
            )
    return questions


def _split_options(text: str, source: str) -> tuple[str, tuple[str, ...]]:
    """The question and option texts of ``"Question? (A) red (B) blue"`` (options inline or on
    their own lines); an option's text ends at its line's end (a following instruction line is
    not part of it)."""
    marks = list(_OPTION_MARK.finditer(text))
    letters = "".join(m.group(1) for m in marks)
    if len(marks) < 2 or letters != OPTION_LETTERS[: len(marks)]:
        raise ValueError(f"{source}: expected the question followed by (A), (B), ... options, got {text!r}")
    ends = [m.start() for m in marks[1:]] + [len(text)]
    options = tuple(text[m.end() : end].strip().split("\n")[0].strip() for m, end in zip(marks, ends))
    return text[: marks[0].start()].strip(), options


def _vstar_folders(root: Path, available: list[Path], categories: str | Sequence[str] | None) -> list[Path]:
    """The category folders a run reads (see :func:`read_vstar`)."""
    if categories == ALL_CATEGORIES:
        return available
    wanted = list(
        VSTAR_DEFAULT_FOLDERS if categories is None else [categories] if isinstance(categories, str) else categories
    )
    by_name = {p.name: p for p in available}
    missing = [name for name in wanted if name not in by_name]
    if missing or not wanted:
        found = ", ".join(by_name) or "none"
        raise FileNotFoundError(
            f"V*Bench folder {root} has no question folder {', '.join(missing) or '(none asked for)'} "
            f"(found: {found}); choose with --categories (e.g. --categories {ALL_CATEGORIES} or "
            f"--categories {','.join(by_name) or 'direct_attributes,relative_position'})"
        )
    return [by_name[name] for name in dict.fromkeys(wanted)]


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """The images of a folder by file stem, whatever the case of their suffix (the download's
    ``OCR/`` and ``GPT4V-hard/`` hold ``.JPG`` files)."""
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in images:
                raise ValueError(f"{folder} has two images for {path.stem}: {images[path.stem].name}, {path.name}")
            images[path.stem] = path
    return images


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


HRBENCH_LAYOUT = (
    "expected hr_bench_4k.tsv / hr_bench_8k.tsv (VLMEvalKit) or lmms-eval's HR-Bench parquet, with columns "
    "index, question, answer, category, A, B, C, D, cycle_category, image (base64, or in a TSV the index of an "
    "earlier row)"
)
HRBENCH_COLUMNS = ("index", "question", "answer", "category", "A", "B", "image")


def read_hrbench(path: str | Path) -> list[Question]:
    """Read HR-Bench: a TSV (``hr_bench_4k.tsv`` / ``hr_bench_8k.tsv``, VLMEvalKit's files, or
    a folder holding exactly one ``.tsv``) or lmms-eval's parquet copy (a ``.parquet`` file or a
    folder with ``*.parquet`` / ``data/*.parquet``), same columns.

    Rows keep the file's option order (HR-Bench already rotates the options: 4 rows per
    image). In a TSV, an ``image`` field of at most 64 characters is the ``index`` of the row
    whose image this row shares. Rows with identical images get the same ``image_key``.
    """
    path = Path(path)
    parquet = _parquet_files(path)
    if parquet:
        digests: list[str] = []
        records, loaders = _parquet_records(parquet, HRBENCH_LAYOUT, digests)
        source = parquet[0]
        _require_columns(
            [c for c in records[0]] + ["image"] if records else [], HRBENCH_COLUMNS, source, HRBENCH_LAYOUT
        )
        rows = [{k: "" if v is None else str(v) for k, v in record.items()} for record in records]
        keys = [digest or f"{source.name} index {row['index']}" for digest, row in zip(digests, rows)]
        return [
            _hrbench_question(i, row, loader, key, source)
            for i, (row, loader, key) in enumerate(zip(rows, loaders, keys))
        ]
    tsv = _single_file(path, (".tsv",), "HR-Bench", HRBENCH_LAYOUT)
    table = TsvTable(tsv, lazy_columns=("image",))
    _require_columns(table.header, HRBENCH_COLUMNS, tsv, HRBENCH_LAYOUT)
    if not table.rows:
        raise ValueError(f"{tsv} holds a header but no questions; {HRBENCH_LAYOUT}")
    row_of_index = {row["index"]: i for i, row in enumerate(table.rows)}

    def loader(row: int) -> Callable[[], Image.Image]:
        def load() -> Image.Image:
            source = f"{tsv.name} index {table.rows[row]['index']}"
            value = table.lazy_field(row, "image")
            if len(value) <= TsvTable.INLINE_CHARS:
                target = row_of_index.get(value.strip())
                if target is None or table.rows[target]["image"] is not None:
                    raise ImageDecodeError(
                        f"{source}: image field {value!r} is neither base64 data nor "
                        "the index of a row that holds an image"
                    )
                source = f"{source} (image of index {value.strip()})"
                value = table.lazy_field(target, "image")
            return decode_image_bytes(value, source, upright=False)

        return load

    questions = []
    for i, row in enumerate(table.rows):
        reference = row["image"].strip() if row["image"] is not None else None
        holder = row_of_index.get(reference, i) if reference is not None else i
        key = table.digests.get((holder, "image"), f"{tsv.name} index {row['index']}")
        questions.append(_hrbench_question(i, row, loader(i), key, tsv))
    return questions


def _hrbench_question(
    i: int, row: Mapping[str, str], loader: Callable[[], Image.Image], image_key: str, source: Path
) -> Question:
    options = tuple(row[c] for c in OPTION_LETTERS if c in row and row[c].strip() not in ("", "nan", "None"))
    label = row["answer"].strip().upper()
    if label not in OPTION_LETTERS[: len(options)]:
        raise ValueError(
            f"{source} index {row['index']}: answer {row['answer']!r} is not one of the "
            f"option letters {OPTION_LETTERS[: len(options)]}"
        )
    category = HRBENCH_CATEGORIES.get(row["category"].strip().lower(), row["category"].strip())
    return Question(
        id=row["index"].strip(),
        index=i,
        question=row["question"],
        options=options,
        label=label,
        category=category,
        image_source=f"{source.name} index {row['index']}",
        loader=loader,
        groups={"cycle": row["cycle_category"]} if "cycle_category" in row else {},
        image_key=image_key,
    )


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
            raise ValueError(
                f"{path} index {record['index']}: answer {record['answer']!r} is not one of "
                f"the option letters {OPTION_LETTERS[: len(options)]}"
            )
        subset = "Perception" if "perception" in str(record["category"]).lower() else "Reasoning"
        domain_name = str(record["category"]).split("/")[-1].strip()
        domain = f"{subset}/{MME_DOMAINS.get(domain_name, domain_name)}"
        questions.append(
            Question(
                id=str(record["index"]).strip(),
                index=i,
                question=str(record["question"]),
                options=options,
                label=label,
                category=f"{domain}/{str(record['l2-category']).strip()}",
                image_source=f"{path.name} index {record['index']}",
                loader=loader,
                groups={"subset": subset, "domain": domain},
            )
        )
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
            raise ValueError(
                f"{path} index {record['index']}: option {j} is lettered {match.group(1)}, expected {OPTION_LETTERS[j]}"
            )
        options.append(text[match.end() :] if match else text.strip())
    if len(options) < 2:
        raise ValueError(f"{path} index {record['index']}: expected at least 2 options, got {options!r}")
    return tuple(options)


def _image_column(columns: list[str], source: Path, layout: str = MME_LAYOUT) -> str:
    for name in ("bytes", "image"):
        if name in columns:
            return name
    raise ValueError(f"{source} has no image column ('bytes' or 'image'); {layout}")


def _require_columns(columns: Sequence[str], required: Sequence[str], source: Path, layout: str) -> None:
    """A clear error naming the file, the missing columns and the expected layout."""
    missing = [name for name in required if name not in columns]
    if missing:
        raise ValueError(
            f"{source} lacks column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(columns) or 'none'}); {layout}"
        )


def _parquet_files(path: Path) -> list[Path]:
    """``path`` itself if it is a parquet file; else the parquet files in it or in its ``data/``."""
    if path.suffix == ".parquet":
        return [path]
    if path.is_dir():
        return sorted(path.glob("*.parquet")) + sorted(path.glob("data/*.parquet"))
    return []


def _text_records(file: Path, layout: str = MME_LAYOUT) -> tuple[list[dict], list[Callable[[], Image.Image]]]:
    if file.suffix == ".tsv":
        table = TsvTable(file, lazy_columns=("bytes", "image"))
        column = _image_column(table.header, file, layout)

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
        raise ValueError(f"unsupported file {file}; {layout}")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{file} must hold a list of question objects; {layout}")
    if not records:
        return [], []  # "no questions found", below
    column = _image_column(list(records[0]), file, layout)
    loaders = [
        (lambda rec=rec: _decode_cell(rec.get(column), f"{file.name} index {rec.get('index')}")) for rec in records
    ]
    return [{k: v for k, v in rec.items() if k != column} for rec in records], loaders


def _parquet_records(
    files: list[Path], layout: str = MME_LAYOUT, digests: list[str] | None = None
) -> tuple[list[dict], list[Callable[[], Image.Image]]]:
    """Records (without the image column) and image loaders of parquet files; with
    ``digests`` given, the SHA-1 of each record's image cell is appended to it (one pass over
    the images, a row group at a time), so that equal images can be recognised."""
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
        column = _image_column(parquet.schema_arrow.names, file, layout)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=[c for c in parquet.schema_arrow.names if c != column])
            for offset, record in enumerate(table.to_pylist()):
                records.append(record)
                loaders.append(cache.loader(file, group, offset, column, f"{file.name} index {record.get('index')}"))
            if digests is not None:
                cells = parquet.read_row_group(group, columns=[column]).column(0).to_pylist()
                digests += [_cell_digest(cell) for cell in cells]
    return records, loaders


def _cell_digest(value: Any) -> str:
    """SHA-1 of an image cell (base64 text, bytes or ``{"bytes": ...}``), ``""`` when empty."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, str):
        value = value.encode()
    return hashlib.sha1(value).hexdigest() if value else ""


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
        raise FileNotFoundError(
            f"{name}: expected exactly one {'/'.join(suffixes)} file in {path} (found: {found}); "
            f"pass the file itself; {layout}"
        )
    return candidates[0]
