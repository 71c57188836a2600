"""Every GPU speed figure of the project in one command and one JSON, in under 8 minutes.

    python benchmarks/gpu_receipts.py --out benchmarks/results/gpu_receipts_<device>.json
    python benchmarks/gpu_receipts.py --dry --out /tmp/receipts_dry.json     # CPU smoke run

Sections, each against its target, with a met/not-met flag computed from what it measured:

* ``relevance_kernel``: the fused Triton relevance-map kernel (``impl="triton"``) and the torch
  path on LLaVA-1.5-7B, LLaVA-OneVision-7B and Qwen2.5-VL-7B shapes (``relevance_inputs.SHAPES``)
  at B = 1 and 8, bf16 and fp16, next to a device-to-device copy of the same value tensor.
  Effective bandwidth = value bytes read / kernel time; copy bandwidth = bytes read + written /
  copy time (the definition the earlier H100 figures used). Target: the kernel reaches >= 75 %
  of copy bandwidth on OneVision at B = 8 (both dtypes).
* ``propose_rois``: :func:`propose_rois` on B = 1, 8, 64 maps of the 24 x 24 and 114 x 57
  settings (``roi_inputs``), eager, and with the pre-NMS part under ``torch.compile``
  (``mode="reduce-overhead"``: CUDA graphs) followed by the same NMS. Target: B = 64 in < 1 ms
  (the faster of the two paths, on both settings).
* ``e2e``: ``benchmarks/e2e.py``'s functions on full-size random-weight LLaVA-1.5-7B and
  LLaVA-OneVision-7B, FOCUS Steps-8 with the preset's overrun (random weights never answer
  "Yes", so every proposed ROI is verified: the worst case) and e2e.py's generation budgets, at
  batch 8 and 1, eager and ``FocusWrapper(compile=True)``, with sdpa attention and with
  flash-attn when it is installed. Per run: seconds per question (per phase and total), seconds
  inside the model, the share outside it, peak GPU memory. Targets: LLaVA-1.5-7B Steps-8 at
  batch 8 in <= 0.5 s per question (the fastest variant), <= 3 % of the time outside the model
  (every run).

Timing: CUDA events around each repetition after warm-up calls, median over the repetitions,
``torch.cuda.synchronize`` before the first and after the last (the relevance kernel's
repetitions each start by overwriting a 256 MB buffer, so the values are read from HBM, not L2,
as ``triton.testing.do_bench`` does). An error in one measurement is recorded in its entry and
the rest go on; the JSON is rewritten after every entry, so a run stopped from outside still
leaves the entries it finished (``"status": "running"`` marks the section it was in).

Time budget. Each section runs under a SIGALRM budget; an entry cut off is recorded as
``timeout``, entries never started are listed under ``not_run``, and the total never exceeds
``TOTAL_BUDGET_S`` = 450 s from start (8 minutes hold with ~30 s to spare for the interpreter's
start). How the budgets were sized: the ``--dry`` costs below were measured on the project's
shared 2-core CPU (one torch thread, load average ~3.7 from other jobs: wall seconds, about 1.5x
the CPU seconds); the GPU costs are reasoned from the shapes, since no GPU has run this yet.

* ``relevance_kernel``: 60 s. Dry: 9 s, nearly all triton's interpreter (~0.2 s a launch).
  On the GPU the timed work is small: per entry 60 kernel calls at <= 1 ms, 23 torch-path
  calls at <= ~20 ms, 55 copies of <= 1.2 GB at <= 0.6 ms, each after a 256 MB overwrite
  (~0.1 ms): < 1 s. What costs is triton compiling the kernels once per dtype and tile
  configuration (~1-2 s each, about a dozen) and generating up to 1.2 GB of random values per
  entry: ~25-40 s for the 12 entries. The target shape (OneVision B = 8) goes first.
* ``propose_rois``: 70 s. Dry: 8 s (six dynamo traces with the ``eager`` backend at 1-2 s
  each; the eager entries take milliseconds). On the GPU the eager entries take ~10 ms a call
  (< 3 s in all); each compiled shape is an inductor compile plus CUDA-graph recording,
  ~10-20 s, six shapes: 60-120 s. So B = 64 (the target) is compiled first for both settings,
  then 8, then 1; what the budget does not reach is listed under ``not_run``.
* ``e2e``: 300 s (what is left). Dry: 38 s for 2 tiny models x eager/compiled x 2 batch sizes,
  of which the dynamo traces of the compiled runs take 26 s. On the GPU, building a 7B
  random-weight model on the device takes ~10 s; a FOCUS Steps-8 question with overrun is
  ~15 forward passes (48 generated tokens at ~25 ms a token in eager HF decoding, ~12
  verification prompts of ~600 tokens for LLaVA-1.5 and ~7.4k for OneVision) plus host
  preprocessing of 2-8K images: LLaVA-1.5's batch-8 run (8 questions + a warm-up) ~5-15 s,
  OneVision's ~30-60 s; ``compile=True`` adds an inductor compile of the decoder with dynamic
  shapes, and recompiles when batch sizes change (the dry run captures 3-4 graphs in the timed
  batch-2 run after the batch-1 warm-up), ~1-2 min per model. Each (model, compile) pair is
  capped (eager 80 s, compiled 130 s) so that one slow compile cannot starve the rest; order:
  LLaVA-1.5 eager, LLaVA-1.5 compiled, OneVision eager, OneVision compiled (the last gets what
  is left, possibly nothing: rerun it alone with ``--sections e2e --e2e-families
  llava-onevision`` if so). ``--budget-scale`` multiplies every budget (the tests check with
  it that a spent budget ends its section and leaves a complete JSON).

``--dry``: the same code paths on the CPU at tiny shapes (triton's interpreter, set before
triton is imported; tiny random models; dynamo's ``eager`` backend instead of inductor;
batch 2 for 8): ~42 s of CPU time on one thread, so that this script cannot rot
(``tests/test_gpu_receipts.py``). A dry JSON says ``"dry": true`` at the top and in every
section, its device is the CPU, and it refuses to be written under ``benchmarks/results/``:
its figures are never GPU figures. Without ``--dry`` and without CUDA the script exits 2.
"""

from __future__ import annotations

import os
import sys

DRY = "--dry" in sys.argv[1:]
if DRY:  # before torch and triton are imported: triton reads TRITON_INTERPRET at import
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import e2e  # noqa: E402  (beside this script)
import torch  # noqa: E402
from relevance_inputs import SHAPES, make_inputs  # noqa: E402
from roi_inputs import SETTINGS, hyper_parameters, make_maps  # noqa: E402

from focus_modules import FocusWrapper  # noqa: E402
from focus_modules.functional import propose_rois  # noqa: E402
from focus_modules.ops.propose_rois import candidate_rois, check_roi_inputs, suppress_overlaps  # noqa: E402
from focus_modules.ops.relevance_map import relevance_scores  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TOTAL_BUDGET_S = 450.0
SECTION_BUDGET_S = {"relevance_kernel": 60.0, "propose_rois": 70.0, "e2e": 300.0}
E2E_CAP_S = {False: 80.0, True: 130.0}  # per (model, attention, compile) build, eager / compiled

KERNEL_TARGET_SHAPE = "onevision_b8"
KERNEL_TARGET_FRACTION = 0.75
PROPOSALS_TARGET_BATCH = 64
PROPOSALS_TARGET_MS = 1.0
E2E_TARGET_MODEL = "llava-1.5"
E2E_TARGET_BATCH = 8
E2E_TARGET_SECONDS = 0.5
E2E_TARGET_OUTSIDE_SHARE = 0.03
E2E_STEPS = 8
E2E_FAMILIES = ("llava-1.5", "llava-onevision")
ATTENTION = ("sdpa", "flash_attention_2")  # flash-attn only where installed

# --dry: the same shapes' names at tiny sizes (B = 2 stands for 8), as few repetitions as can
# take a median.
DRY_SHAPES = {name: (min(b, 2), 2, 48, 2, 16, s, 24) for name, (b, _, _, _, _, s, _) in SHAPES.items()}
DRY_ROI_GRIDS = {"24x24": (12, 12), "114x57": (19, 10)}


@dataclass
class Mode:
    """What the run measures on: the GPU at full size, or the CPU at dry sizes."""

    dry: bool
    device: torch.device
    kernel_shapes: dict
    roi_grids: dict
    roi_batches: tuple
    e2e_batches: tuple
    e2e_image_sizes: tuple
    e2e_build: dict  # e2e.build's layers / vision_layers / tiny / dtype
    generation: dict  # FocusWrapper's max_new_tokens / target_max_new_tokens
    compile_options: dict | bool  # FocusWrapper(compile=...)
    roi_compile: dict  # torch.compile options of candidate_rois
    reps: dict = field(default_factory=dict)  # name -> (warm-up calls, timed repetitions)
    e2e_families: tuple = E2E_FAMILIES
    budget_scale: float = 1.0  # every time budget is multiplied by it (tests of the budgets)

    @classmethod
    def gpu(cls) -> Mode:
        return cls(
            dry=False,
            device=torch.device("cuda"),
            kernel_shapes=SHAPES,
            roi_grids={name: hw for name, (hw, _) in SETTINGS.items()},
            roi_batches=(1, 8, 64),
            e2e_batches=(8, 1),
            e2e_image_sizes=e2e.IMAGE_SIZES,
            e2e_build=dict(layers=None, vision_layers=None, tiny=False, dtype=torch.bfloat16),
            generation=dict(max_new_tokens=e2e.ANSWER_TOKENS, target_max_new_tokens=e2e.TARGET_TOKENS),
            compile_options=True,
            roi_compile=dict(fullgraph=True, dynamic=False, mode="reduce-overhead"),
            reps={"kernel": (10, 50), "torch_path": (3, 20), "copy": (5, 50), "rois": (3, 30)},
        )

    @classmethod
    def cpu_dry(cls) -> Mode:
        return cls(
            dry=True,
            device=torch.device("cpu"),
            kernel_shapes=DRY_SHAPES,
            roi_grids=DRY_ROI_GRIDS,
            roi_batches=(1, 8, 64),
            e2e_batches=(2, 1),
            e2e_image_sizes=("224x168", "168x224"),
            e2e_build=dict(layers=1, vision_layers=1, tiny=True, dtype=torch.float32),
            generation=dict(max_new_tokens=2, target_max_new_tokens=2),
            compile_options={"backend": "eager"},
            roi_compile=dict(fullgraph=True, dynamic=False, backend="eager"),
            reps={"kernel": (0, 1), "torch_path": (0, 1), "copy": (0, 1), "rois": (1, 2)},
        )


# --- bookkeeping ----------------------------------------------------------------------------------


class BudgetExceeded(Exception):
    """Raised by SIGALRM when a time budget is spent."""


# The time limits in force, innermost last; a limit's flag is set when its alarm fires, so that a
# spent budget is noticed even where library code caught BudgetExceeded and raised another
# exception (dynamo wraps it, for one).
_LIMITS: list[dict] = []


def budget_spent() -> bool:
    return any(limit["fired"] for limit in _LIMITS)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`BudgetExceeded` in the main thread after ``seconds`` (nested limits keep
    the outer one: the inner gets at most what the outer has left)."""
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    if outer_left:
        seconds = min(seconds, outer_left)
    if seconds <= 0:
        raise BudgetExceeded("no time left in the budget")
    start = time.monotonic()
    limit = {"fired": False}

    def on_alarm(signum, frame):
        limit["fired"] = True
        raise BudgetExceeded(f"time budget of {seconds:.0f} s spent")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    _LIMITS.append(limit)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield limit
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _LIMITS.remove(limit)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:  # re-arm the outer limit with what it has left (fires at once if spent)
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - start), 1e-3))


class Receipt:
    """The JSON being written: rewritten (atomically) after every entry."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.data = {**header, "sections": {}, "finished": False}

    def write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


class Section:
    """One section's record: entries, targets judged after every entry, status."""

    def __init__(self, receipt: Receipt, name: str, budget_s: float, judge: Callable[[list], list], dry: bool):
        self.receipt, self.judge = receipt, judge
        self.record = receipt.data["sections"][name] = {
            "status": "running",
            "dry": dry,
            "budget_s": round(budget_s, 1),
            "seconds": None,
            "met": None,
            "targets": judge([]),
            "entries": [],
            "planned": [],
            "not_run": [],
            "error": None,
        }
        receipt.write()

    def plan(self, keys: list[str]) -> None:
        self.record["planned"] = keys
        self.receipt.write()

    def add(self, entry: dict) -> None:
        self.record["entries"].append(entry)
        self.rejudge()
        figure = {k: entry[k] for k in ("median_ms", "fraction_of_copy_bandwidth", "error", "skipped") if k in entry}
        if "seconds_per_question" in entry:
            figure["seconds_per_question"] = entry["seconds_per_question"]["total"]
        print(f"  {entry['key']}: {json.dumps(figure)}", flush=True)

    def rejudge(self) -> None:
        targets = self.judge(self.record["entries"])
        flags = [t["met"] for t in targets]
        self.record["targets"] = targets
        self.record["met"] = None if None in flags else all(flags)
        self.receipt.write()

    def close(self, status: str, seconds: float, error: str | None = None) -> None:
        done = {e["key"] for e in self.record["entries"]}
        self.record.update(
            status=status,
            seconds=round(seconds, 2),
            error=error,
            not_run=[k for k in self.record["planned"] if k not in done],
        )
        self.rejudge()


def measure(section: Section, key: str, fn: Callable[[], dict], **labels) -> dict:
    """Run one measurement; its figures, or its error, become one entry. A spent budget is
    recorded too and then raised again: it ends what the budget was for."""
    if budget_spent():
        raise BudgetExceeded("time budget spent")
    entry = {"key": key, **labels}
    start = time.monotonic()
    try:
        entry.update(fn())
    except Exception as exc:  # recorded, the other entries go on unless the budget is spent
        if isinstance(exc, BudgetExceeded) or budget_spent():
            entry.update(error="timeout: time budget spent", wall_seconds=round(time.monotonic() - start, 2))
            section.add(entry)
            raise BudgetExceeded("time budget spent") from exc
        entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    entry["wall_seconds"] = round(time.monotonic() - start, 2)  # warm-up and compiling included
    section.add(entry)
    return entry


@contextlib.contextmanager
def dynamo_warnings():
    """Collect the first line of every distinct warning torch._dynamo logs inside the block."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            line = record.getMessage().split("\n")[0][:300]
            if line not in seen:
                seen.append(line)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def time_ms(fn: Callable[[], object], device: torch.device, reps: tuple[int, int], flush_l2: bool = False) -> dict:
    """Median milliseconds of ``fn`` over ``reps = (warm-up calls, timed repetitions)``: CUDA
    events per repetition on the GPU (synchronized before the first and after the last), the
    wall clock on the CPU. ``flush_l2`` overwrites a 256 MB buffer before each repetition."""
    warmup, n = reps
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        flush = torch.empty(64 * 2**20, dtype=torch.int32, device=device) if flush_l2 else None
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        torch.cuda.synchronize()
        for start, end in events:
            if flush is not None:
                flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": significant(statistics.median(times)), "min_ms": significant(min(times)), "reps": n}


def significant(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


# --- section 1: relevance-map kernel ------------------------------------------------------------------


def judge_kernel(entries: list) -> list:
    fractions = [
        e["fraction_of_copy_bandwidth"]
        for e in entries
        if e["shape_name"] == KERNEL_TARGET_SHAPE and "fraction_of_copy_bandwidth" in e
    ]
    complete = len(fractions) == 2  # bf16 and fp16
    return [
        {
            "target": f"Triton kernel >= {KERNEL_TARGET_FRACTION:.0%} of copy bandwidth on LLaVA-OneVision-7B "
            "shapes at B = 8 (bf16 and fp16; the smaller counts)",
            "measured": min(fractions) if complete else None,
            "met": min(fractions) >= KERNEL_TARGET_FRACTION if complete else None,
        }
    ]


def relevance_kernel_section(mode: Mode, section: Section) -> None:
    """Kernel, torch path and a copy of the same bytes, per shape and dtype."""
    names = [KERNEL_TARGET_SHAPE] + [n for n in mode.kernel_shapes if n != KERNEL_TARGET_SHAPE]
    dtypes = (torch.bfloat16, torch.float16)
    section.plan([f"{n}/{str(d).removeprefix('torch.')}" for n in names for d in dtypes])
    for name in names:
        shape = mode.kernel_shapes[name]
        for dtype in dtypes:
            dtype_name = str(dtype).removeprefix("torch.")

            def run(shape=shape, dtype=dtype):
                values, target_idx, visual_idx, _ = make_inputs(*shape, device=mode.device, dtype=dtype)
                value_bytes = values.numel() * values.element_size()
                copy_dst = torch.empty_like(values)
                copy = time_ms(lambda: copy_dst.copy_(values), mode.device, mode.reps["copy"], flush_l2=True)
                kernel = time_ms(
                    lambda: relevance_scores(values, target_idx, visual_idx, impl="triton"),
                    mode.device,
                    mode.reps["kernel"],
                    flush_l2=True,
                )
                torch_path = time_ms(
                    lambda: relevance_scores(values, target_idx, visual_idx, impl="torch"),
                    mode.device,
                    mode.reps["torch_path"],
                    flush_l2=True,
                )
                fused = relevance_scores(values, target_idx, visual_idx, impl="triton")
                reference = relevance_scores(values, target_idx, visual_idx, impl="torch")
                kernel_gbs = value_bytes / (kernel["median_ms"] * 1e-3) / 1e9
                copy_gbs = 2 * value_bytes / (copy["median_ms"] * 1e-3) / 1e9
                return {
                    "value_bytes": value_bytes,
                    "kernel": kernel,
                    "torch_path": torch_path,
                    "copy": copy,
                    "kernel_gbs": significant(kernel_gbs),
                    "copy_gbs": significant(copy_gbs),
                    "fraction_of_copy_bandwidth": significant(kernel_gbs / copy_gbs),
                    "speedup_over_torch_path": significant(torch_path["median_ms"] / kernel["median_ms"]),
                    "max_abs_diff_vs_torch_path": float((fused - reference).abs().max()),
                    "max_score": float(reference.abs().max()),
                }

            measure(
                section,
                f"{name}/{dtype_name}",
                run,
                shape_name=name,
                dtype=dtype_name,
                shape=dict(zip("B L N H D S V".split(), shape)),
            )
            free_memory(mode.device)


# --- section 2: ROI proposals ----------------------------------------------------------------------


def judge_proposals(entries: list) -> list:
    best = {}
    for e in entries:
        if e["batch"] == PROPOSALS_TARGET_BATCH and "median_ms" in e:
            best[e["setting"]] = min(best.get(e["setting"], float("inf")), e["median_ms"])
    complete = set(best) == set(SETTINGS)
    worst = max(best.values()) if complete else None
    return [
        {
            "target": f"propose_rois on {PROPOSALS_TARGET_BATCH} maps in < {PROPOSALS_TARGET_MS} ms "
            "(the faster of eager and compiled, on each setting; the slower setting counts)",
            "measured": worst,
            "met": worst < PROPOSALS_TARGET_MS if complete else None,
        }
    ]


def propose_rois_section(mode: Mode, section: Section) -> None:
    """Eager at every batch, then compiled (B = 64 first: each shape is a compile)."""
    batches = sorted(mode.roi_batches, reverse=True)
    order = [("eager", b, s) for b in batches for s in SETTINGS] + [
        ("compiled", b, s) for b in batches for s in SETTINGS
    ]
    section.plan([f"{path}/{setting}/b{batch}" for path, batch, setting in order])
    for path, batch, setting in order:
        (h, w), cfg = mode.roi_grids[setting], SETTINGS[setting][1]

        def run(path=path, batch=batch, h=h, w=w, cfg=cfg):
            maps, grid = make_maps(batch, h, w, mode.device)
            params = hyper_parameters(cfg)
            want = propose_rois(maps, grid, nms_threshold=cfg.nms_threshold, **params)
            if path == "eager":
                fn = lambda: propose_rois(maps, grid, nms_threshold=cfg.nms_threshold, **params)  # noqa: E731
            else:
                compiled = torch.compile(candidate_rois, **mode.roi_compile)

                def fn():
                    check_roi_inputs(maps, grid, nms_threshold=cfg.nms_threshold, **params)
                    return suppress_overlaps(compiled(maps, grid, **params), cfg.nms_threshold)

                start = time.perf_counter()
                fn()  # compile (and record the CUDA graph) outside the timed repetitions
                compile_s = time.perf_counter() - start
            timing = time_ms(fn, mode.device, mode.reps["rois"])
            got = fn()
            result = {
                **timing,
                "matches_eager": bool(torch.equal(got.boxes, want.boxes) and torch.equal(got.valid, want.valid)),
            }
            if path == "compiled":
                result["compile_seconds"] = round(compile_s, 2)
            return result

        measure(section, f"{path}/{setting}/b{batch}", run, path=path, setting=setting, batch=batch, grid_hw=[h, w])
    torch._dynamo.reset()  # frees the CUDA graphs' memory pools before the end-to-end section


# --- section 3: end to end -------------------------------------------------------------------------


def judge_e2e(entries: list, target_batch: int = E2E_TARGET_BATCH) -> list:
    ok = [e for e in entries if "seconds_per_question" in e]
    target_runs = [e for e in ok if e["family"] == E2E_TARGET_MODEL and e["batch_size"] == target_batch]
    best = min(target_runs, key=lambda e: e["seconds_per_question"]["total"], default=None)
    worst_share = max((e["outside_model_share"] for e in ok), default=None)
    return [
        {
            "target": f"{E2E_TARGET_MODEL}-7b FOCUS Steps-{E2E_STEPS} at batch {target_batch} in <= "
            f"{E2E_TARGET_SECONDS} s per question (the fastest variant measured)",
            "measured": best and best["seconds_per_question"]["total"],
            "measured_by": best and best["key"],
            "met": None if best is None else best["seconds_per_question"]["total"] <= E2E_TARGET_SECONDS,
        },
        {
            "target": f"<= {E2E_TARGET_OUTSIDE_SHARE:.0%} of the time outside the model (every run measured)",
            "measured": worst_share,
            "met": None if worst_share is None else worst_share <= E2E_TARGET_OUTSIDE_SHARE,
        },
    ]


def e2e_section(mode: Mode, section: Section, deadline: float) -> None:
    """Per family and attention: build once, run eager, then compile in place and run again."""
    if importlib.util.find_spec("flash_attn") is None:
        no_flash = "flash-attn not installed"
    elif mode.device.type != "cuda":
        no_flash = "flash-attn needs CUDA"
    else:
        no_flash = None
    section.plan([key for *_, key in _e2e_runs(mode)])
    section.record["interrupted"] = []
    for family in mode.e2e_families:
        for attn in ATTENTION:
            if attn == "flash_attention_2" and no_flash:
                for f, a, _, _, key in _e2e_runs(mode):
                    if (f, a) == (family, attn):
                        section.add({"key": key, "family": f, "attn": a, "skipped": no_flash})
                continue
            built = {}
            try:
                for compiled in (False, True):
                    try:
                        cap = E2E_CAP_S[compiled] * mode.budget_scale
                        with time_limit(min(cap, deadline - time.monotonic())):
                            _e2e_build_and_run(mode, section, family, attn, compiled, built)
                    except Exception as exc:  # a timeout or a failed build: the next build goes on
                        if budget_spent():  # the section's own budget, not this build's
                            raise
                        section.record["interrupted"].append(
                            f"{family}/{attn}/{'compiled' if compiled else 'eager'}: {type(exc).__name__}: {exc}"[:2000]
                        )
                        section.receipt.write()
            finally:
                built.clear()
                torch._dynamo.reset()
                free_memory(mode.device)


def _e2e_runs(mode: Mode):
    """(family, attention, compiled, batch, key) in the order they run."""
    for family in mode.e2e_families:
        for attn in ATTENTION:
            for compiled in (False, True):
                for batch in mode.e2e_batches:
                    yield (
                        family,
                        attn,
                        compiled,
                        batch,
                        f"{family}/{attn}/{'compiled' if compiled else 'eager'}/b{batch}",
                    )


def _e2e_build_and_run(mode: Mode, section: Section, family: str, attn: str, compiled: bool, built: dict) -> None:
    """Build the model once per (family, attention) (kept in ``built``), wrap it (compiling it in
    place when ``compiled``) and run every batch size; a spent budget stops the rest."""
    if not built:
        model, processor = e2e.build(family, **mode.e2e_build, device=mode.device)
        if model.config.text_config._attn_implementation != attn:
            model.set_attn_implementation(attn)
        built.update(model=model, processor=processor)
    model = built["model"]
    depth = model.config.text_config.num_hidden_layers
    config = e2e.focus_config(family, E2E_STEPS, depth, overrun=True)
    compile_options = mode.compile_options if compiled else False
    fw = FocusWrapper(model, built["processor"], config, compile=compile_options, **mode.generation)
    sizes = e2e.parse_sizes(mode.e2e_image_sizes)
    for f, a, c, batch, key in _e2e_runs(mode):
        if (f, a, c) != (family, attn, compiled):
            continue
        items = e2e.make_questions(max(batch, len(sizes)), sizes)

        def run(items=items, batch=batch):
            with dynamo_warnings() as warnings:
                report = e2e.run(fw, items, "focus", batch, mode.device, compiled)
            # e.g. a recompile limit hit: frames past it run eagerly, so the figure is not all compiled
            return {**report, "dynamo_warnings": warnings} if warnings else report

        measure(
            section,
            key,
            run,
            family=family,
            model=f"{family}-7b",
            attn=attn,
            attn_in_use=model.config.text_config._attn_implementation,
            compile=compile_options,
            batch_size=batch,
            questions=len(items),
            n_steps=E2E_STEPS,
            overrun=True,
            layers=depth,
            focus_layers=list(config.layers),
            image_sizes=list(mode.e2e_image_sizes),
        )


# --- main -------------------------------------------------------------------------------------------


def versions() -> dict:
    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    import transformers

    return {
        "torch": torch.__version__,
        "triton": version("triton"),
        "transformers": transformers.__version__,
        "flash_attn": version("flash-attn") or version("flash_attn"),
        "cuda": torch.version.cuda,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--dry", action="store_true", help="CPU smoke run at tiny shapes (not a GPU figure)")
    parser.add_argument(
        "--sections", nargs="+", choices=tuple(SECTION_BUDGET_S), default=list(SECTION_BUDGET_S), help="run only these"
    )
    parser.add_argument(
        "--e2e-families", nargs="+", choices=E2E_FAMILIES, default=list(E2E_FAMILIES), help="e2e: only these models"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (--dry)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every time budget (tests)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.dry:
        if args.out.resolve().is_relative_to(RESULTS_DIR):
            parser.exit(2, f"{parser.prog}: a --dry receipt is no GPU figure; write it outside {RESULTS_DIR}\n")
        torch.set_num_threads(args.threads)
        mode = Mode.cpu_dry()
    elif not torch.cuda.is_available():
        parser.exit(2, f"{parser.prog}: no CUDA device: this script measures GPU figures (--dry: CPU smoke run)\n")
    else:
        mode = Mode.gpu()
    mode.e2e_families = tuple(args.e2e_families)
    mode.budget_scale = args.budget_scale
    total_budget = TOTAL_BUDGET_S * args.budget_scale
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "receipt": "focus_modules GPU speed figures (benchmarks/gpu_receipts.py)",
        "dry": mode.dry,
        "note": (
            "DRY RUN on the CPU at tiny shapes: exercises the code paths; no figure here is a GPU figure"
            if mode.dry
            else "measured on the device named here"
        ),
        "device": e2e.device_name(mode.device),
        **versions(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "total_budget_s": total_budget,
    }
    receipt = Receipt(args.out, header)
    receipt.write()
    sections = {
        "relevance_kernel": (relevance_kernel_section, judge_kernel),
        "propose_rois": (propose_rois_section, judge_proposals),
        # --dry: its largest batch stands for 8
        "e2e": (e2e_section, functools.partial(judge_e2e, target_batch=max(mode.e2e_batches))),
    }
    for name in args.sections:
        run, judge = sections[name]
        budget = min(SECTION_BUDGET_S[name] * args.budget_scale, total_budget - (time.monotonic() - started))
        section = Section(receipt, name, budget, judge, mode.dry)
        start = time.monotonic()
        status, error = "done", None
        limit = {"fired": False}
        try:
            with time_limit(budget) as limit:
                if name == "e2e":
                    run(mode, section, deadline=start + budget)
                else:
                    run(mode, section)
        except Exception as exc:
            if isinstance(exc, BudgetExceeded) or limit["fired"]:
                status, error = "timeout", f"time budget of {budget:.0f} s spent"
            else:
                status, error = "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"[:3000]
        section.close(status, time.monotonic() - start, error)
        free_memory(mode.device)
        print(f"{name}: {status} in {time.monotonic() - start:.1f} s, met={section.record['met']}", flush=True)
    receipt.data["finished"] = True
    receipt.data["seconds"] = round(time.monotonic() - started, 1)
    receipt.write()
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
