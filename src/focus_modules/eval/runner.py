"""Resumable, shardable benchmark runs: one JSON line per question, then a summary.

The runner needs only an *answerer*: any object with FocusWrapper's ``answer`` method
(DESIGN.md §2). Each finished question is appended to the results file at once (flushed and
fsynced); a rerun with the same file skips every question already there, so after a crash or
``kill -9`` each question is answered exactly once. Under ``torchrun`` each rank answers the
questions at positions ``rank, rank + world, ...`` into its own shard file and rank 0 merges
them (see :mod:`focus_modules.eval.results`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from focus_modules.eval.datasets import Question, multiple_choice_text
from focus_modules.eval.distributed import Barrier, rank_and_world
from focus_modules.eval.images import ImageDecodeError
from focus_modules.eval.metrics import SEARCH_PHASES, lenient_letter, strict_letter, summarize
from focus_modules.eval.results import appender, merge_shards, read_rows, shard_path, shard_paths, write_json

METHODS = ("focus", "vanilla")


class Answerer(Protocol):
    """What the runner calls: FocusWrapper's ``answer`` (DESIGN.md §2).

    Each returned result has ``answer`` (str), ``targets`` (list[str]), ``question_type``,
    ``rois`` (per target, Roi objects with ``box`` xyxy pixels, ``relevance``,
    ``confidence``), ``forward_passes`` (phase -> count) and ``timings`` (phase -> s).
    """

    def answer(self, images: list, questions: list[str], options: list[list[str]] | None = None,
               targets: list[list[str]] | None = None, method: str = "focus",
               batch_size: int | None = None) -> list[Any]: ...


def run_id(dataset: str, method: str, config: Mapping[str, Any] | None) -> str:
    """Short hash of what determines the answers; rows of another run cannot be mixed in."""
    key = json.dumps({"dataset": dataset, "method": method, "config": config}, sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def config_dict(config: Any) -> dict[str, Any] | None:
    """A FocusConfig (or any dataclass / mapping) as plain JSON-able data."""
    if config is None:
        return None
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps(data, default=str))


def summary_path_for(out: Path) -> Path:
    """Default summary file beside the results: ``results.jsonl`` -> ``results.summary.json``."""
    return out.with_name(out.stem + ".summary.json")


def run_eval(
    questions: Sequence[Question],
    answerer: Answerer,
    out: str | Path,
    *,
    dataset: str,
    method: str = "focus",
    config: Any = None,
    batch_size: int = 1,
    summary: str | Path | None = None,
    info: Mapping[str, Any] | None = None,
    progress: bool = True,
    prompt_of: Callable[[str, list[str]], str] = multiple_choice_text,
) -> dict[str, Any] | None:
    """Answer every question not yet in ``out``, then write the summary.

    Args:
        questions: the questions of this run (e.g. a dataset cut by ``--limit``), in order.
        answerer: an object with FocusWrapper's ``answer`` method.
        out: the JSON-lines results file; appended to, and resumed from if it exists.
        dataset: benchmark name, recorded in the summary and the run id.
        method: ``"focus"`` or ``"vanilla"``.
        config: the FocusConfig used (recorded; part of the run id).
        batch_size: questions per ``answer`` call.
        summary: the summary JSON path (default: ``out`` with ``.summary.json``).
        info: more facts for the summary's ``run`` entry (model, dtype, device, ...).
        progress: show a progress bar (rank 0 only) with the running accuracy.
        prompt_of: the text the model is shown for a question and its options, recorded as
            each row's ``prompt`` (FocusWrapper: ``fw.adapter.answer_prompt``).

    Returns:
        the summary on rank 0 (it covers the rows of ``questions`` only), ``None`` on the
        other ranks.

    Raises:
        ValueError: two questions share an id, or ``out`` holds rows of a different
            dataset/method/config.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seen: set[str] = set()
    repeated = [q.id for q in questions if q.id in seen or seen.add(q.id)]
    if repeated:
        raise ValueError(f"question ids must be unique (runs resume by id); repeated: {repeated[:5]}")
    out = Path(out)
    config = config_dict(config)
    rid = run_id(dataset, method, config)
    rank, world = rank_and_world()
    barrier = Barrier(world)
    try:
        done = _answered(out, rid)
        mine = [q for i, q in enumerate(questions) if i % world == rank]
        todo = [q for q in mine if q.id not in done]
        tally = _Tally([done[q.id] for q in mine if q.id in done])
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"{dataset} {method}", unit="q",
                   disable=not progress or rank != 0, dynamic_ncols=True)
        if tally.n:
            bar.set_postfix(tally.postfix())
        target = out if world == 1 else shard_path(out, rank)
        with appender(target) as write, bar:
            for start in range(0, len(todo), batch_size):
                for row in _answer_batch(todo[start:start + batch_size], answerer, method, rid, prompt_of):
                    write(row)
                    tally.add(row)
                    bar.update(1)
                    bar.set_postfix(tally.postfix())
        barrier.wait()
        if rank != 0:
            return None
        rows = merge_shards(out) if world > 1 or shard_paths(out) else read_rows(out)
        wanted = {q.id for q in questions}
        rows = [r for r in rows if r["id"] in wanted]
        result = {
            "dataset": dataset,
            "method": method,
            "n_questions": len(questions),
            "complete": len(rows) == len(questions),
            **summarize(rows),
            "config": config,
            "run": {"run_id": rid, "world_size": world, "batch_size": batch_size, **(info or {})},
        }
        write_json(Path(summary) if summary else summary_path_for(out), result)
        return result
    finally:
        barrier.close()


def _answered(out: Path, rid: str) -> dict[str, dict[str, Any]]:
    """Rows already in ``out`` or in any shard file, by id; refuses rows of another run."""
    done: dict[str, dict[str, Any]] = {}
    for path in [out, *shard_paths(out)]:
        for row in read_rows(path):
            if row.get("run_id") != rid:
                raise ValueError(
                    f"{path} holds results of another run (run_id {row.get('run_id')!r}, method "
                    f"{row.get('method')!r}; this run is {rid!r}): use another --out, or delete the file to start over"
                )
            done.setdefault(str(row["id"]), row)
    return done


def _answer_batch(batch: list[Question], answerer: Answerer, method: str, rid: str,
                  prompt_of: Callable[[str, list[str]], str]) -> list[dict[str, Any]]:
    """One row per question of ``batch``. A question whose image cannot be decoded, or whose
    answer fails (an error of the model or its processor on that input), gets an error row;
    the others are answered as usual."""
    base = {q.id: _base_row(q, method, rid, prompt_of) for q in batch}
    rows: dict[str, dict[str, Any]] = {}
    images, ready = [], []
    for question in batch:
        try:
            images.append(question.load_image())
            ready.append(question)
        except ImageDecodeError as err:
            rows[question.id] = _error_row(base[question.id], str(err))
    if ready:
        peak = None
        for question, outcome, seconds in _answer_each(ready, images, answerer, method):
            if isinstance(outcome, Exception):
                reason = f"{type(outcome).__name__}: {outcome}"
                tqdm.write(f"question {question.id}: {reason}", file=sys.stderr)
                rows[question.id] = _error_row(base[question.id], reason)
            else:
                peak = _peak_gpu_memory_gb() if peak is None else peak
                rows[question.id] = _result_row(base[question.id], question, outcome, seconds, peak)
    return [rows[q.id] for q in batch]


def _answer_each(questions: list[Question], images: list, answerer: Answerer,
                 method: str) -> list[tuple[Question, Any, float | None]]:
    """``(question, result or exception, seconds)`` per question: the whole group in one call,
    and, if that call fails, each question alone, so that one failing question costs only
    its own row."""
    try:
        start = time.perf_counter()
        results = answerer.answer(images, [q.question for q in questions],
                                  options=[list(q.options) for q in questions], method=method,
                                  batch_size=len(questions))
        if len(results) != len(questions):
            raise RuntimeError(f"the answerer returned {len(results)} results for {len(questions)} questions")
        seconds = (time.perf_counter() - start) / len(questions)
        return [(question, result, seconds) for question, result in zip(questions, results)]
    except Exception as err:  # noqa: BLE001 -- recorded in the question's row, never dropped
        if len(questions) == 1:
            return [(questions[0], err, None)]
    return [item for question, image in zip(questions, images)
            for item in _answer_each([question], [image], answerer, method)]


def _base_row(question: Question, method: str, rid: str,
              prompt_of: Callable[[str, list[str]], str]) -> dict[str, Any]:
    return {
        "id": question.id,
        "index": question.index,
        "category": question.category,
        "groups": dict(question.groups),
        "question": question.question,
        "options": list(question.options),
        "prompt": prompt_of(question.question, list(question.options)),
        "label": question.label,
        "method": method,
        "run_id": rid,
        "gt_boxes": [list(box) for box in question.gt_boxes],
        "gt_boxes_clipped": question.gt_boxes_clipped,
    }


def _error_row(base: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        **base,
        "answer": None,
        "correct": False,
        "correct_lenient": False,
        "targets": [],
        "question_type": None,
        "rois": [],
        "forward_passes": {},
        "fp_search": 0,
        "seconds": None,
        "timings": {},
        "peak_gpu_memory_gb": None,
        "notes": [],
        "error": reason,
    }


def _result_row(base: dict[str, Any], question: Question, result: Any, seconds: float,
                peak: float | None) -> dict[str, Any]:
    answer = result.answer
    forward_passes = {str(phase): int(count) for phase, count in dict(result.forward_passes).items()}
    return {
        **base,
        "answer": answer,
        "correct": strict_letter(answer, question.letters) == question.label,
        "correct_lenient": lenient_letter(answer, question.letters) == question.label,
        "targets": [str(t) for t in result.targets],
        "question_type": result.question_type,
        "rois": [[_roi(roi) for roi in target] for target in result.rois],
        "forward_passes": forward_passes,
        "fp_search": sum(forward_passes.get(phase, 0) for phase in SEARCH_PHASES),
        "seconds": seconds,
        "timings": {str(phase): float(s) for phase, s in dict(result.timings).items()},
        "peak_gpu_memory_gb": peak,
        "notes": [str(note) for note in getattr(result, "notes", [])],
        "error": None,
    }


def _roi(roi: Any) -> dict[str, Any]:
    return {
        "box": [float(v) for v in roi.box],
        "relevance": float(roi.relevance),
        "confidence": None if roi.confidence is None else float(roi.confidence),
    }


def _peak_gpu_memory_gb() -> float | None:
    """``torch.cuda.max_memory_allocated()`` in GiB (A.2), ``None`` when CUDA is not in use."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return torch.cuda.max_memory_allocated() / 1024**3


class _Tally:
    """Running accuracy for the progress bar."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.n = self.correct = self.lenient = 0
        for row in rows:
            self.add(row)

    def add(self, row: Mapping[str, Any]) -> None:
        self.n += 1
        self.correct += bool(row.get("correct"))
        self.lenient += bool(row.get("correct_lenient"))

    def postfix(self) -> dict[str, str]:
        return {"acc": f"{100 * self.correct / self.n:.1f}%", "lenient": f"{100 * self.lenient / self.n:.1f}%"}
