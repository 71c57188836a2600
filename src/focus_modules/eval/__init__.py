"""Evaluation harness (layer 5): benchmark readers, protocols, metrics, resumable runs, plots.

``focus eval`` (see :mod:`focus_modules.cli`) is a thin shell around :func:`load_dataset`
and :func:`run_eval`.
"""

from focus_modules.eval.datasets import (
    Question,
    load_dataset,
    multiple_choice_text,
    read_hrbench,
    read_mme_rw_lite,
    read_vstar,
)
from focus_modules.eval.images import ImageDecodeError
from focus_modules.eval.metrics import box_coverage, lenient_letter, roi_hits, strict_letter, summarize
from focus_modules.eval.protocols import lmms_eval_letter, lmms_eval_prompt
from focus_modules.eval.results import merge_shards, read_rows
from focus_modules.eval.runner import Answerer, run_eval

__all__ = [
    "Answerer",
    "ImageDecodeError",
    "Question",
    "box_coverage",
    "lenient_letter",
    "lmms_eval_letter",
    "lmms_eval_prompt",
    "load_dataset",
    "merge_shards",
    "multiple_choice_text",
    "read_hrbench",
    "read_mme_rw_lite",
    "read_rows",
    "read_vstar",
    "roi_hits",
    "run_eval",
    "strict_letter",
    "summarize",
]
