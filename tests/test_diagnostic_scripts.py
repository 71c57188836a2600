"""The tiny model's diagnostic scripts in benchmarks/ run on a minimal setting and report what
their docstrings say (they are run by hand, so nothing else would notice them breaking)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from focus_modules.synthetic.scene import make_scene

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_vision_tower_probe_trains_on_two_crops_per_object_and_reports_each_kind():
    lines = [json.loads(line) for line in run_script(
        "tiny_vision_tower_probe.py", "--steps", "3", "--train-scenes", "1", "--val-scenes", "1",
        "--pool", "attention").splitlines()]
    sizes, *reports = lines
    assert sizes == {"train_crops": 2 * len(make_scene((7001, 0, 0)).objects),
                     "validation_crops": 2 * len(make_scene((9501, 0, 0)).objects)}
    assert [r["step"] for r in reports] == [3]
    accuracies = {k: v for k, v in reports[0].items() if k not in ("step", "seconds")}
    assert set(accuracies) == {f"{kind}_crop_{what}" for kind in ("object", "roi") for what in ("shape", "colour")}
    assert all(0.0 <= v <= 1.0 for v in accuracies.values())


def test_model_probes_report_every_probe_and_every_layer_range():
    results = json.loads(run_script("tiny_model_probes.py", "--scenes", "2"))
    layers = 6  # the shipped checkpoint's decoder layers
    ranges = [(a, b) for a in range(layers + 1) for b in range(a + 1, layers + 1)]
    expected = {"object_crop_colour", "object_crop_shape", "object_crop_existence_Yes", "object_crop_existence_No",
                "roi_crop_existence_Yes", "roi_crop_existence_No"}
    expected |= {f"map_argmax_on_{what}_layers_{a}_{b}" for what in ("target", "any_object") for a, b in ranges}
    assert set(results) == expected
    for mean, count in results.values():
        assert count > 0 and 0.0 <= mean <= 1.0
    # Two attribute questions per scene, each asked as one map per layer range.
    assert results["map_argmax_on_target_layers_3_6"][1] == 4
