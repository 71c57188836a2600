"""benchmarks/gpu_receipts.py keeps working: its --dry run (the CPU, tiny shapes, triton's
interpreter, tiny random models) runs every section and writes the JSON the GPU run writes,
marked as dry; without --dry and without CUDA it refuses in one line. The GPU figures themselves
come from running it on a GPU (benchmarks/results/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_receipts.py"
SECTIONS = {"relevance_kernel", "propose_rois", "e2e"}
HEADER = {"device", "torch", "triton", "transformers", "flash_attn", "cuda", "timestamp", "command"}
KERNEL_SHAPES = {"llava15", "llava15_b8", "onevision", "onevision_b8", "qwen2_5_vl", "qwen2_5_vl_b8"}
# Both paths read the same low-precision values and do all math in fp32; they differ only in the
# order of fp32 accumulations (48 tokens x 2 layers, 3 targets): ~1e-5 of the largest score.
KERNEL_RTOL = 1e-4


def run_script(*args, cuda_visible="", timeout=600):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": cuda_visible, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def test_without_cuda_it_refuses_in_one_line(tmp_path):
    out = tmp_path / "receipt.json"
    result = run_script("--out", str(out))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--dry" in lines[0]
    assert not out.exists()


def test_a_dry_receipt_cannot_go_into_results():
    result = run_script("--dry", "--out", str(SCRIPT.parent / "results" / "gpu_receipts_dry.json"))
    assert result.returncode != 0 and "no GPU figure" in result.stderr
    assert not (SCRIPT.parent / "results" / "gpu_receipts_dry.json").exists()


@pytest.mark.slow
def test_dry_run_runs_every_section(tmp_path):
    out = tmp_path / "receipt.json"
    result = run_script("--dry", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    receipt = json.loads(out.read_text())

    assert receipt["dry"] is True and "DRY RUN" in receipt["note"] and receipt["finished"] is True
    assert receipt["device"].startswith("CPU")
    assert HEADER <= set(receipt) and "--dry" in receipt["command"]
    assert set(receipt["sections"]) == SECTIONS
    for name, section in receipt["sections"].items():
        assert section["dry"] is True, name
        assert section["status"] == "done" and section["error"] is None, (name, section["error"])
        assert section["not_run"] == [] and section["planned"], name
        assert [e["key"] for e in section["entries"]] == section["planned"], name
        assert section["targets"] and all(t["met"] in (True, False) for t in section["targets"]), name
        assert section["met"] == all(t["met"] for t in section["targets"]), name
        for entry in section["entries"]:
            assert "error" not in entry, (name, entry)

    kernel = receipt["sections"]["relevance_kernel"]
    assert {(e["shape_name"], e["dtype"]) for e in kernel["entries"]} == {
        (s, d) for s in KERNEL_SHAPES for d in ("bfloat16", "float16")
    }
    for entry in kernel["entries"]:
        assert entry["kernel"]["median_ms"] > 0 and entry["copy"]["median_ms"] > 0
        assert entry["torch_path"]["median_ms"] > 0
        assert entry["max_abs_diff_vs_torch_path"] <= KERNEL_RTOL * entry["max_score"], entry["key"]
        assert entry["fraction_of_copy_bandwidth"] == pytest.approx(
            entry["copy"]["median_ms"] / (2 * entry["kernel"]["median_ms"]), rel=1e-3
        )
    [kernel_target] = kernel["targets"]
    onevision_b8 = [e["fraction_of_copy_bandwidth"] for e in kernel["entries"] if e["shape_name"] == "onevision_b8"]
    assert kernel_target["measured"] == min(onevision_b8)
    assert kernel_target["met"] == (min(onevision_b8) >= 0.75)

    proposals = receipt["sections"]["propose_rois"]
    assert {(e["path"], e["batch"]) for e in proposals["entries"]} == {
        (p, b) for p in ("eager", "compiled") for b in (1, 8, 64)
    }
    assert all(e["matches_eager"] and e["median_ms"] > 0 for e in proposals["entries"])
    [rois_target] = proposals["targets"]
    best = {}
    for e in proposals["entries"]:
        if e["batch"] == 64:
            best[e["setting"]] = min(best.get(e["setting"], float("inf")), e["median_ms"])
    assert rois_target["measured"] == max(best.values()) and rois_target["met"] == (max(best.values()) < 1.0)

    e2e = receipt["sections"]["e2e"]
    measured = [e for e in e2e["entries"] if "skipped" not in e]
    assert {(e["family"], e["compile"] is not False, e["batch_size"]) for e in measured} == {
        (f, c, b) for f in ("llava-1.5", "llava-onevision") for c in (False, True) for b in (1, 2)
    }
    for entry in measured:
        assert entry["n_steps"] == 8 and entry["attn_in_use"] == entry["attn"]
        assert 0 < entry["model_seconds_per_question"] <= entry["seconds_per_question"]["total"]
        assert 0 <= entry["outside_model_share"] < 1 and entry["process_max_rss_bytes"] > 0
        assert entry["forward_passes_per_question"]["verify"] >= 1
    speed_target, share_target = e2e["targets"]
    # the dry run's batch 2 stands for the target's batch 8
    llava_b2 = {e["key"]: e["seconds_per_question"]["total"] for e in measured if e["key"].startswith("llava-1.5/")}
    llava_b2 = {k: v for k, v in llava_b2.items() if k.endswith("/b2")}
    assert speed_target["measured"] == min(llava_b2.values()) and speed_target["measured_by"] in llava_b2
    assert speed_target["met"] == (speed_target["measured"] <= 0.5)
    assert share_target["measured"] == max(e["outside_model_share"] for e in measured)
    assert share_target["met"] == (share_target["measured"] <= 0.03)


@pytest.mark.slow
def test_spent_budgets_end_sections_and_keep_the_receipt(tmp_path):
    # 1 % of every budget: 0.6 s for the kernel section, whose 12 interpreted entries take seconds
    out = tmp_path / "receipt.json"
    result = run_script("--dry", "--budget-scale", "0.01", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    receipt = json.loads(out.read_text())
    assert receipt["finished"] is True and set(receipt["sections"]) == SECTIONS
    kernel = receipt["sections"]["relevance_kernel"]
    assert kernel["status"] == "timeout" and kernel["not_run"]
    assert kernel["seconds"] <= kernel["budget_s"] + 5  # the alarm stopped it, not the end of the work
    for name, section in receipt["sections"].items():
        assert section["status"] in ("done", "timeout"), (name, section["error"])
        done = [e["key"] for e in section["entries"]]
        assert sorted(done + section["not_run"]) == sorted(section["planned"]), name
        timed_out = [e for e in section["entries"] if e.get("error", "").startswith("timeout")]
        assert len(timed_out) <= 1 or name == "e2e", name  # one per section; e2e: one per build at most
