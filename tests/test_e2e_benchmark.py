"""benchmarks/e2e.py keeps working: a tiny-scale run of every family writes the report its
docstring describes (small images keep it short; the full-size run needs a GPU and is run by
hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PHASES = {"targets", "relevance", "verify", "answer"}


@pytest.mark.slow
def test_tiny_scale_run_reports_every_phase(tmp_path):
    out = tmp_path / "e2e.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "e2e.py"),
            "--scale",
            "tiny",
            "--layers",
            "2",
            "--vision-layers",
            "1",
            "--steps",
            "1",
            "--batch-sizes",
            "1",
            "2",
            "--questions",
            "2",
            "--image-sizes",
            "640x480",
            "400x560",
            "--target-tokens",
            "2",
            "--answer-tokens",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"].startswith("CPU") and report["scale"] == "tiny"
    runs = report["runs"]
    families = ("llava-1.5-7b", "llava-onevision-7b", "qwen2.5-vl-7b")
    assert [(r["model"], r["method"], r["batch_size"]) for r in runs] == [
        (f, m, b) for f in families for m in ("vanilla", "focus") for b in (1, 2)
    ]
    for run in runs:
        seconds = run["seconds_per_question"]
        assert set(seconds) == PHASES | {"total"}
        assert set(run["forward_passes_per_question"]) == set(run["tokens_per_question"]) == PHASES
        assert 0 < run["model_seconds_per_question"] <= seconds["total"]
        assert 0 <= run["outside_model_share"] < 1 and run["process_max_rss_bytes"] > 0
        passes = run["forward_passes_per_question"]
        if run["method"] == "vanilla":
            assert passes == {"targets": 0, "relevance": 0, "verify": 0, "answer": 1}
        else:
            assert passes["targets"] == 1 and passes["relevance"] >= 1 and passes["verify"] >= 1
            assert run["tokens_per_question"]["relevance"] > 0
