"""Resumable, shardable benchmark runs: one JSON line per question, then a summary.

The runner needs only an *answerer*: any object with FocusWrapper's ``answer`` method
(docs/design.md §7). Each finished question is appended to the results file at once
(flushed and fsynced); a rerun with the same file skips every question already there, so after
a crash or ``kill -9`` each question is answered exactly once. Every row records what produced
it (:mod:`focus_modules.eval.identity`); a rerun that differs is refused, naming the
difference, unless ``overwrite`` starts the file afresh. One run at a time holds the file's
lock.

Questions that share an image and a question (HR-Bench's option rotations) are answered in one
call with one FOCUS search (``search_keys``); each row records the passes it actually spent and,
as ``fp_search_unshared``, those of the search it used (the per-question figure of the paper).

Under ``torchrun`` the questions (or groups of questions sharing a search) are dealt to the
ranks in turn; each rank appends to its own shard file and rank 0 merges them (see
:mod:`focus_modules.eval.results`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from focus_modules import __version__
from focus_modules.config import ANSWER_SCHEMES, METHODS, WINDOW_FIELDS, FocusConfig
from focus_modules.eval.datasets import Question, multiple_choice_text
from focus_modules.eval.distributed import Barrier, rank_and_world
from focus_modules.eval.identity import identity_differences, identity_id
from focus_modules.eval.images import ImageDecodeError, full_resolution_box, reduced_scale, reduced_scale_note
from focus_modules.eval.metrics import lenient_letter, map_peak_cell, strict_letter, summarize
from focus_modules.eval.protocols import PROTOCOLS, lmms_eval_letter, lmms_eval_prompt
from focus_modules.eval.results import (
    ResultsLockedError,
    appender,
    exclusive,
    merge_shards,
    read_rows,
    shard_path,
    shard_paths,
    write_json,
)
from focus_modules.results import roi_record, search_forward_passes


class Answerer(Protocol):
    """What the runner calls: ``FocusWrapper.answer`` (docs/design.md §7).

    Each returned result has ``answer`` (str), ``targets`` (list[str]), ``question_type``,
    ``rois`` (per target, Roi objects with ``box`` xyxy pixels, ``relevance``,
    ``confidence``), ``forward_passes`` (phase -> count), ``timings`` (phase -> s), and may
    have ``option_scores`` (logits matching) and ``search_reused_from`` (index in the call of
    the question whose search it reused).
    """

    def answer(
        self,
        images: list,
        questions: list[str],
        options: list[list[str]] | None = None,
        targets: list[list[str]] | None = None,
        method: str = "focus",
        batch_size: int | None = None,
        answer_prompts: list[str | None] | None = None,
        answer_scheme: str = "generate",
        search_keys: list | None = None,
    ) -> list[Any]: ...


def run_identity(
    dataset: str,
    method: str,
    config: Mapping[str, Any] | None,
    protocol: str = "paper",
    answer_scheme: str = "generate",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What determines a run's answers, recorded in every row as ``run``: the dataset, method,
    FOCUS config, protocol, answer scheme and package version, plus ``extra`` (the CLI adds the
    model and its fingerprint, the data files' fingerprint, option seed, dtype)."""
    return {
        "dataset": dataset,
        "method": method,
        "config": config,
        "protocol": protocol,
        "answer_scheme": answer_scheme,
        "package": f"focus-modules {__version__}",
        **(extra or {}),
    }


def config_dict(config: Any) -> dict[str, Any] | None:
    """A FocusConfig (or any dataclass / mapping) as plain JSON-able data. A FocusConfig without
    windows (``window_size=None``) leaves out the window fields, which then change nothing: a
    result file written before windowed maps existed keeps its run identity and resumes."""
    if config is None:
        return None
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    if isinstance(config, FocusConfig) and config.window_size is None:
        for name in WINDOW_FIELDS:
            data.pop(name)
    return json.loads(json.dumps(data, default=str))


def summary_path_for(out: Path) -> Path:
    """Default summary file beside the results: ``results.jsonl`` -> ``results.summary.json``."""
    return out.with_name(out.stem + ".summary.json")


@dataclass(frozen=True)
class _Settings:
    """How every question of a run is asked and recorded."""

    dataset: str
    method: str
    protocol: str
    answer_scheme: str
    run: Mapping[str, Any]  # run_id and run identity, copied into every row
    prompt_of: Callable[[str, list[str]], str]

    def prompt(self, question: Question) -> str:
        if self.protocol == "lmms-eval":
            return lmms_eval_prompt(self.dataset, question.question, question.options)
        return self.prompt_of(question.question, list(question.options))


def run_eval(
    questions: Sequence[Question],
    answerer: Answerer,
    out: str | Path,
    *,
    dataset: str,
    method: str = "focus",
    config: Any = None,
    protocol: str = "paper",
    answer_scheme: str = "generate",
    batch_size: int = 1,
    summary: str | Path | None = None,
    info: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    prompt_of: Callable[[str, list[str]], str] = multiple_choice_text,
) -> dict[str, Any] | None:
    """Answer every question not yet in ``out``, then write the summary.

    Args:
        questions: the questions of this run (e.g. a dataset cut by ``--limit``), in order.
        answerer: an object with FocusWrapper's ``answer`` method.
        out: the JSON-lines results file; appended to, and resumed from if it exists.
        dataset: benchmark name, recorded in the summary and the run identity.
        method: one of :data:`focus_modules.config.METHODS` (FOCUS, the plain model, or a
            search baseline; only FOCUS shares a search between rows of one image and question).
        config: the FocusConfig used (recorded; part of the run identity).
        protocol: ``"paper"`` (the adapter's prompt, ``prompt_of``; A.2) or ``"lmms-eval"``
            (that harness's prompt per dataset, :mod:`focus_modules.eval.protocols`).
        answer_scheme: ``"generate"`` (A.2) or ``"logits"`` (logits matching, C.5; paper
            protocol only).
        batch_size: questions per ``answer`` call (questions sharing a search stay together).
        summary: the summary JSON path (default: ``out`` with ``.summary.json``).
        info: more facts for the summary's ``run`` entry (device, limit, ...) that do not
            change the answers.
        identity: more facts that determine the answers (model, data fingerprint, ...), added
            to :func:`run_identity`; rows of a run with another identity are refused.
        overwrite: delete ``out``, its shards and its summary first, instead of resuming.
        progress: show a progress bar (rank 0 only) with the running accuracy.
        prompt_of: the adapter's text for a question and its options (FocusWrapper:
            ``fw.adapter.answer_prompt``), recorded as each row's ``prompt`` under the paper
            protocol.

    Returns:
        the summary on rank 0 (it covers the rows of ``questions`` only), ``None`` on the
        other ranks.

    Raises:
        ValueError: two questions share an id; ``out`` holds rows of another run (the message
            names what differs), or two rows for one id.
        ResultsLockedError: another process is writing ``out``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if answer_scheme not in ANSWER_SCHEMES:
        raise ValueError(f"answer scheme must be one of {ANSWER_SCHEMES}, got {answer_scheme!r}")
    if answer_scheme == "logits" and protocol != "paper":
        raise ValueError("the logits answer scheme is the paper's (C.5): use it with the paper protocol")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seen: set[str] = set()
    repeated = [q.id for q in questions if q.id in seen or seen.add(q.id)]
    if repeated:
        raise ValueError(f"question ids must be unique (runs resume by id); repeated: {repeated[:5]}")
    out = Path(out)
    config = config_dict(config)
    ident = run_identity(dataset, method, config, protocol, answer_scheme, identity)
    rid = identity_id(ident)
    settings = _Settings(dataset, method, protocol, answer_scheme, {"run_id": rid, "run": ident}, prompt_of)
    summary_path = Path(summary) if summary else summary_path_for(out)
    rank, world = rank_and_world()
    barrier = Barrier(world)
    with contextlib.ExitStack() as stack:
        stack.callback(barrier.close)
        refused = None
        if rank == 0:  # rank 0 holds the lock for the whole job, merge included
            try:
                stack.enter_context(exclusive(out))
                if overwrite:
                    for path in [out, *shard_paths(out), summary_path]:
                        path.unlink(missing_ok=True)
            except ResultsLockedError as err:
                refused = err
        if not barrier.all_ok(refused is None):
            raise refused or ResultsLockedError(f"{out} is being written by another focus eval (seen by rank 0)")
        done = _answered(out, ident)
        units = _search_units(questions, method)
        mine = [q for u, unit in enumerate(units) if u % world == rank for q in unit]
        todo = [[q for q in unit if q.id not in done] for u, unit in enumerate(units) if u % world == rank]
        todo = [unit for unit in todo if unit]
        tally = _Tally([done[q.id] for q in mine if q.id in done])
        bar = tqdm(
            total=len(mine),
            initial=len(mine) - sum(map(len, todo)),
            desc=f"{dataset} {method}",
            unit="q",
            disable=not progress or rank != 0,
            dynamic_ncols=True,
        )
        if tally.n:
            bar.set_postfix(tally.postfix())
        target = out if world == 1 else shard_path(out, rank)
        with appender(target) as write, bar:
            for batch in _batches(todo, batch_size):
                for row in _answer_batch(batch, answerer, settings):
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
            "protocol": protocol,
            "answer_scheme": answer_scheme,
            "n_questions": len(questions),
            "complete": len(rows) == len(questions),
            **summarize(rows),
            "config": config,
            "run": {"run_id": rid, **ident, "world_size": world, "batch_size": batch_size, **(info or {})},
        }
        write_json(summary_path, result)
        return result


def _search_units(questions: Sequence[Question], method: str) -> list[list[Question]]:
    """Questions grouped by the search they can share (same image and question; FOCUS only),
    in order of first appearance; every other question is a unit of its own."""
    units: dict[Any, list[Question]] = {}
    for question in questions:
        units.setdefault(_search_key(question) if method == "focus" else question.id, []).append(question)
    return list(units.values())


def _search_key(question: Question) -> tuple[str, str]:
    """Questions with equal keys can share one FOCUS search: same image, same question."""
    return (question.image_key, question.question)


def _batches(units: list[list[Question]], batch_size: int) -> list[list[Question]]:
    """Whole units packed into batches of at most ``batch_size`` questions (a unit larger than
    that is a batch of its own)."""
    batches: list[list[Question]] = []
    for unit in units:
        if not batches or len(batches[-1]) + len(unit) > batch_size:
            batches.append([])
        batches[-1].extend(unit)
    return batches


def _answered(out: Path, identity: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows already in ``out`` or in any shard file, by id.

    Refuses rows of another run, naming what differs, and a file holding two rows for one id.
    The same id in ``out`` and in a shard is expected (a merge killed before it deleted the
    shards); the row in ``out`` wins, as in :func:`merge_shards`.
    """
    done: dict[str, dict[str, Any]] = {}
    for path in [out, *shard_paths(out)]:
        in_file: set[str] = set()
        for row in read_rows(path):
            differences = identity_differences(row.get("run"), identity)
            if differences:
                raise ValueError(
                    f"{path} holds results of another run ({'; '.join(differences)}): pass --overwrite to "
                    "replace them, or choose another --out"
                )
            qid = str(row["id"])
            if qid in in_file:
                raise ValueError(
                    f"{path} holds two rows for question {qid!r} (two runs wrote to it at once?): rerun with "
                    "--overwrite to answer every question again, or delete the repeated lines"
                )
            in_file.add(qid)
            done.setdefault(qid, row)
    return done


def _answer_batch(batch: list[Question], answerer: Answerer, settings: _Settings) -> list[dict[str, Any]]:
    """One row per question of ``batch``. A question whose image cannot be decoded, or whose
    answer fails (an error of the model or its processor on that input), gets an error row;
    the others are answered as usual."""
    base = {q.id: _base_row(q, settings) for q in batch}
    rows: dict[str, dict[str, Any]] = {}
    images, ready, reduced = [], [], {}
    for question in batch:
        try:
            images.append(question.load_image())
            ready.append(question)
            reduced[question.id] = reduced_scale(images[-1])
        except ImageDecodeError as err:
            rows[question.id] = _error_row(base[question.id], str(err))
    if ready:
        peak = None
        outcomes = _answer_each(ready, images, answerer, settings, base)
        for question, outcome, seconds in outcomes:
            if isinstance(outcome, Exception):
                reason = f"{type(outcome).__name__}: {outcome}"
                tqdm.write(f"question {question.id}: {reason}", file=sys.stderr)
                rows[question.id] = _error_row(base[question.id], reason)
            else:
                peak = _peak_gpu_memory_gb() if peak is None else peak
                rows[question.id] = _result_row(base[question.id], question, outcome, seconds, peak, settings.dataset)
                if reduced[question.id] is not None:
                    _to_full_resolution(rows[question.id], reduced[question.id])
        for question, outcome, _ in outcomes:
            source = getattr(outcome, "search_reused_from", None)
            if source is not None:  # the passes of the search this question used, spent on another
                rows[question.id]["search_reused_from"] = ready[source].id
                rows[question.id]["fp_search_unshared"] = rows[ready[source].id]["fp_search"]
    return [rows[q.id] for q in batch]


def _answer_each(
    questions: list[Question], images: list, answerer: Answerer, settings: _Settings, base: dict[str, dict[str, Any]]
) -> list[tuple[Question, Any, float | None]]:
    """``(question, result or exception, seconds)`` per question: the whole group in one call
    (questions that share a search share it), and, if that call fails, each question alone,
    so that one failing question costs only its own row."""
    try:
        start = time.perf_counter()
        results = answerer.answer(
            images,
            [q.question for q in questions],
            options=[list(q.options) for q in questions],
            method=settings.method,
            batch_size=len(questions),
            answer_scheme=settings.answer_scheme,
            answer_prompts=[base[q.id]["prompt"] for q in questions] if settings.protocol != "paper" else None,
            search_keys=[_search_key(q) for q in questions] if settings.method == "focus" else None,
        )
        if len(results) != len(questions):
            raise RuntimeError(f"the answerer returned {len(results)} results for {len(questions)} questions")
        seconds = (time.perf_counter() - start) / len(questions)
        return [(question, result, seconds) for question, result in zip(questions, results)]
    except Exception as err:  # noqa: BLE001 -- recorded in the question's row, never dropped
        if len(questions) == 1:
            return [(questions[0], err, None)]
    return [
        item
        for question, image in zip(questions, images)
        for item in _answer_each([question], [image], answerer, settings, base)
    ]


def _base_row(question: Question, settings: _Settings) -> dict[str, Any]:
    return {
        "id": question.id,
        "index": question.index,
        "category": question.category,
        "groups": dict(question.groups),
        "question": question.question,
        "options": list(question.options),
        "prompt": settings.prompt(question),
        "label": question.label,
        "method": settings.method,
        "protocol": settings.protocol,
        "answer_scheme": settings.answer_scheme,
        "gt_boxes": [list(box) for box in question.gt_boxes],
        **settings.run,
        "gt_boxes_clipped": question.gt_boxes_clipped,
    }


def _error_row(base: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        **base,
        "answer": None,
        "correct": False,
        "correct_lenient": False,
        "answer_lmms_eval": None,
        "correct_lmms_eval": False,
        "option_scores": None,
        "targets": [],
        "question_type": None,
        "rois": [],
        "map_peaks": [],
        "forward_passes": {},
        "fp_search": 0,
        "fp_search_unshared": 0,
        "search_reused_from": None,
        "seconds": None,
        "timings": {},
        "peak_gpu_memory_gb": None,
        "notes": [],
        "error": reason,
    }


def _result_row(
    base: dict[str, Any], question: Question, result: Any, seconds: float, peak: float | None, dataset: str
) -> dict[str, Any]:
    answer = result.answer
    forward_passes = {str(phase): int(count) for phase, count in dict(result.forward_passes).items()}
    fp_search = search_forward_passes(forward_passes)
    extracted = lmms_eval_letter(dataset, answer, question.options)
    scores = getattr(result, "option_scores", None)
    return {
        **base,
        "answer": answer,
        "correct": strict_letter(answer, question.letters) == question.label,
        "correct_lenient": lenient_letter(answer, question.letters) == question.label,
        "answer_lmms_eval": extracted,
        "correct_lmms_eval": extracted == question.label,
        "option_scores": None if scores is None else [float(s) for s in scores],
        "targets": [str(t) for t in result.targets],
        "question_type": result.question_type,
        "rois": [[roi_record(roi) for roi in target] for target in result.rois],
        "map_peaks": [
            map_peak_cell(heat, extent)
            for heat, extent in zip(getattr(result, "relevance_maps", []), getattr(result, "map_extents", []))
        ],
        "forward_passes": forward_passes,
        "fp_search": fp_search,
        "fp_search_unshared": fp_search,
        "search_reused_from": None,
        "seconds": seconds,
        "timings": {str(phase): float(s) for phase, s in dict(result.timings).items()},
        "peak_gpu_memory_gb": peak,
        "notes": [str(note) for note in getattr(result, "notes", [])],
        "error": None,
    }


def _to_full_resolution(row: dict[str, Any], scale: tuple[float, float]) -> None:
    """A row answered on a reduced decode of its image: boxes in the full image's pixels (the
    frame of its GT boxes), and a note saying so."""
    row["rois"] = full_resolution_rois(row["rois"], scale)
    row["map_peaks"] = [full_resolution_box(box, scale) for box in row["map_peaks"]]
    row["notes"].append(reduced_scale_note(scale))


def full_resolution_rois(rois: list[list[dict[str, Any]]], scale: tuple[float, float]) -> list[list[dict[str, Any]]]:
    """ROI records (:func:`focus_modules.wrapper.roi_record`) of a reduced decode, their boxes
    in the full image's pixels."""
    return [[{**roi, "box": full_resolution_box(roi["box"], scale)} for roi in target] for target in rois]


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
