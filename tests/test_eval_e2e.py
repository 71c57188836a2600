"""``focus eval`` / ``focus ask`` end to end on a tiny random LLaVA-1.5 saved with
``save_pretrained`` (CPU, offline)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from eval_fixtures import VSTAR_ITEMS, make_vstar
from PIL import Image
from tiny_models import build_tiny_llava, words_of

from focus_modules import cli
from focus_modules.eval import load_dataset, read_rows

pytestmark = pytest.mark.slow

# the tiny model has 4 decoder layers; read the last two
MODEL_ARGS = ["--device", "cpu", "--dtype", "float32", "--n-steps", "1", "--set", "layers=2,4"]
SIZES = {f"{folder}/{name}": size for folder, name, *_, size in VSTAR_ITEMS}
SUMMARY_KEYS = {
    "dataset",
    "method",
    "n",
    "accuracy",
    "accuracy_lenient",
    "per_category",
    "fp_search_mean",
    "seconds_mean",
    "errors",
    "config",
    "per_group",
    "fp_per_phase_mean",
    "roi_recall",
    "top_roi_recall",
    "peak_gpu_memory_gb",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    words = [w for item in VSTAR_ITEMS for text in (item[2], *item[3]) for w in words_of(text)]
    model, processor = build_tiny_llava(extra_words=words + ["object", "material", "glove", "very", "long"])
    path = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _eval_argv(model_dir, data, out, *extra):
    return [
        "eval",
        "--model",
        str(model_dir),
        "--dataset",
        "vstar",
        "--data",
        str(data),
        "--out",
        str(out),
        *MODEL_ARGS,
        *extra,
    ]


def test_focus_eval_with_a_saved_tiny_model(model_dir, tmp_path, capsys):
    data = make_vstar(tmp_path / "vstar")
    out = tmp_path / "res.jsonl"
    assert cli.main(_eval_argv(model_dir, data, out, "--no-progress", "--categories", "all")) == 0
    rows = read_rows(out)
    questions = load_dataset("vstar", data, categories="all")
    assert [r["id"] for r in rows] == [q.id for q in questions]
    summary = json.loads((tmp_path / "res.summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["n"] == 4 and summary["errors"] == 1 and summary["complete"]
    assert summary["config"]["layers"] == [2, 4] and summary["config"]["n_steps"] == 1
    assert summary["run"]["model"] == str(model_dir)
    for row in rows:
        if row["error"]:
            assert "sa_10.jpg" in row["error"]
            continue
        assert isinstance(row["answer"], str)
        assert set(row["forward_passes"]) >= {"relevance", "verify", "answer"}
        assert row["fp_search"] == row["forward_passes"]["relevance"] + row["forward_passes"]["verify"]
        assert row["correct"] == (row["answer"].strip() == row["label"])
        # one relevance pass per target, or with several targets one prefix pass + one per
        # target; every ROI lies inside the image
        targets = len(row["targets"])
        assert row["forward_passes"]["relevance"] == (targets + 1 if targets > 1 else targets)
        assert targets == len(row["rois"])
        width, height = SIZES[row["id"]]
        for rois in row["rois"]:
            for roi in rois:
                x1, y1, x2, y2 = roi["box"]
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert "vstar / focus (paper protocol, generate): accuracy" in capsys.readouterr().out


def test_focus_eval_resumes_after_kill_9(model_dir, tmp_path):
    data = make_vstar(tmp_path / "vstar", extra=8)
    out = tmp_path / "res.jsonl"
    argv = [sys.executable, "-m", "focus_modules.cli", *_eval_argv(model_dir, data, out, "--no-progress")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = read_rows(out)
    assert 3 <= len(written) < 11, "the run was not killed mid-way"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(out)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(q.id for q in load_dataset("vstar", data)) and len(ids) == len(set(ids))
    assert rows[: len(written)] == written
    assert json.loads((tmp_path / "res.summary.json").read_text())["n"] == 11


def test_focus_ask_viz_with_a_saved_tiny_model(model_dir, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), (40, 120, 40)).save(image)
    viz = tmp_path / "viz.png"
    argv = [
        "ask",
        str(image),
        "What is the color of the cup?",
        "--option",
        "red",
        "--option",
        "blue",
        "--model",
        str(model_dir),
        *MODEL_ARGS,
        "--viz",
        str(viz),
        "--json",
    ]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed["answer"], str)
    n_targets = len(printed["targets"])
    assert Image.open(viz).size == (300 * (1 + n_targets), 200)
