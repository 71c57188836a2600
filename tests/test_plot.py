"""focus plot: accuracy against search forward passes from focus eval outputs."""

import json

from PIL import Image

from focus_modules.cli import main
from focus_modules.eval.plot import run_point


def write_run(folder, name, method, accuracy, fps, n_steps=None):
    """A fabricated focus eval output: RESULTS.jsonl and its summary beside it."""
    results = folder / f"{name}.jsonl"
    results.write_text("{}\n")
    summary = {"method": method, "accuracy": accuracy, "fp_search_mean": fps, "fp_search_unshared_mean": fps}
    summary["config"] = {"n_steps": n_steps} if n_steps is not None else None
    (folder / f"{name}.summary.json").write_text(json.dumps(summary))
    return results


def test_plot_writes_one_point_per_run(tmp_path, capsys):
    runs = [
        write_run(tmp_path, "vanilla", "vanilla", 40.0, 0.0),
        write_run(tmp_path, "focus", "focus", 60.0, 12.5, n_steps=2),
        write_run(tmp_path, "zoomeye", "zoomeye", 58.0, 70.0),
    ]
    assert run_point(runs[1]).label == "focus n_steps=2"
    assert run_point(tmp_path / "zoomeye.summary.json").search_fps == 70.0
    out = tmp_path / "fig" / "plot.png"
    assert main(["plot", *map(str, runs), "--out", str(out), "--title", "t"]) == 0
    image = Image.open(out)
    assert image.size == (900, 600)
    # each run's point has its own colour somewhere on the white canvas
    colors = {c for _, c in image.getcolors(1 << 20)}
    assert {(31, 119, 180), (214, 39, 40), (44, 160, 44)} <= colors


def test_plot_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.summary.json"
    bad.write_text('{"method": "focus"}')
    cases = [
        (tmp_path / "missing.jsonl", "no such file"),
        (bad, "not a focus eval summary"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((empty, "expected one *.summary.json"))
    orphan = tmp_path / "orphan.jsonl"
    orphan.write_text("{}\n")
    cases.append((orphan, "no summary beside it"))
    for path, message in cases:
        capsys.readouterr()
        assert main(["plot", str(path), "--out", str(tmp_path / "p.png")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    run = write_run(tmp_path, "v", "vanilla", 40.0, 0.0)
    assert main(["plot", str(run), "--label", "a", "--label", "b", "--out", str(tmp_path / "p.png")]) == 2
