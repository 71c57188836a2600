import json
import subprocess
import sys

import pytest
from eval_fixtures import FakeAdapter, FakeAnswerer, FakeResult, FakeRoi, make_mme, make_vstar
from PIL import Image

from focus_modules import FocusConfig, cli
from focus_modules.eval import read_rows


def test_set_overrides_are_typed_by_focusconfig():
    assert cli.parse_overrides(
        ["layers=2,6", "k=15", "s_dist=2.5", "overrun=false", "smooth_sigma=none", "expand-threshold=0.4"]
    ) == {"layers": (2, 6), "k": 15, "s_dist": 2.5, "overrun": False, "smooth_sigma": None, "expand_threshold": 0.4}
    assert cli.parse_overrides(["smooth_sigma=1.5", "layers=(3, 9)"]) == {"smooth_sigma": 1.5, "layers": (3, 9)}
    cfg = FocusConfig.preset("llava-1.5", **cli.parse_overrides(["layers=2,6"]))
    assert cfg.layers == (2, 6)
    with pytest.raises(ValueError, match="no field 'kk'.*n_steps"):
        cli.parse_overrides(["kk=3"])
    with pytest.raises(ValueError, match="k expects int"):
        cli.parse_overrides(["k=many"])
    with pytest.raises(ValueError, match="2 comma-separated"):
        cli.parse_overrides(["layers=2,6,8"])
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        cli.parse_overrides(["k"])
    with pytest.raises(ValueError, match="boolean"):
        cli.parse_overrides(["overrun=maybe"])


def _fake_build(calls):
    def build(model_id, dtype, device, attn, dataset, n_steps, overrides, device_map=None):
        calls.append(dict(model=model_id, dataset=dataset, n_steps=n_steps, overrides=overrides, attn=attn))
        steps = 8 if n_steps is None else n_steps  # None: the model folder's setting, else 8
        return FakeAnswerer(), FocusConfig.preset("llava-1.5", dataset=dataset, n_steps=steps, **overrides)

    return build


def test_eval_command_writes_rows_and_summary(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "build_answerer", _fake_build(calls))
    data = make_vstar(tmp_path / "vstar")
    out = tmp_path / "r.jsonl"
    argv = [
        "eval",
        "--model",
        "some/model",
        "--dataset",
        "vstar",
        "--data",
        str(data),
        "--out",
        str(out),
        "--limit",
        "3",
        "--n-steps",
        "2",
        "--set",
        "layers=2,6",
        "--summary",
        str(tmp_path / "s.json"),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    assert calls == [dict(model="some/model", dataset="vstar", n_steps=2, overrides={"layers": (2, 6)}, attn="sdpa")]
    rows = read_rows(out)
    assert len(rows) == 3 and rows[0]["prompt"].endswith("\nLetter?")  # the adapter's answer prompt
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["config"]["layers"] == [2, 6] and summary["config"]["n_steps"] == 2
    assert summary["run"]["model"] == "some/model" and summary["run"]["limit"] == 3
    printed = capsys.readouterr().out
    assert (
        "vstar / focus (paper protocol, generate): accuracy" in printed and "on 3 of 3 questions, 1 errors" in printed
    )


def test_eval_command_on_mme_reports_subsets(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_answerer", _fake_build([]))
    out = tmp_path / "mme.jsonl"
    data = make_mme(tmp_path / "d", "json")
    assert (
        cli.main(
            [
                "eval",
                "--model",
                "m",
                "--dataset",
                "mme-rw-lite",
                "--data",
                str(data),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "mme.summary.json").read_text())
    assert set(summary["per_group"]["subset"]) == {"Perception", "Reasoning"}
    assert summary["errors"] == 1 and summary["n"] == 3
    printed = capsys.readouterr().out
    assert "Perception " in printed and "Reasoning " in printed


def test_cli_errors_are_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_answerer", _fake_build([]))
    assert (
        cli.main(
            [
                "eval",
                "--model",
                "m",
                "--dataset",
                "hrbench",
                "--data",
                str(tmp_path / "none.tsv"),
                "--out",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 2
    )
    assert "hr_bench_4k.tsv" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "eval",
                "--model",
                "m",
                "--dataset",
                "vstar",
                "--data",
                str(make_vstar(tmp_path / "v")),
                "--out",
                str(tmp_path / "r.jsonl"),
                "--set",
                "k=x",
            ]
        )
        == 2
    )
    assert "k expects int" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


class _VizAnswerer:
    adapter = FakeAdapter()

    def answer(self, images, questions, options=None, targets=None, method="focus", batch_size=None):
        import torch

        w, h = images[0].size
        return [
            FakeResult(
                answer="A",
                targets=["cup", "dog"],
                question_type=1,
                rois=[
                    [FakeRoi((0, 0, w / 4, h / 4), 0.9, 0.7), FakeRoi((w / 2, 0, w, h / 2), 0.4, 0.1)],
                    [FakeRoi((w / 2, h / 2, w, h), 0.8, None)],
                ],
                relevance_maps=[
                    torch.zeros(6, 6).index_put_((torch.tensor(5), torch.tensor(5)), torch.tensor(1.0)),
                    torch.rand(6, 6),
                ],
                map_extents=[(0, 0, w, h), (0, -h / 2, w, h * 1.5)],
                forward_passes={"targets": 1, "relevance": 1, "verify": 3, "answer": 1},
                timings={"answer": 0.1},
            )
        ]


def test_ask_prints_json_and_writes_viz(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_answerer", lambda *a: (_VizAnswerer(), FocusConfig.preset("llava-1.5")))
    image = tmp_path / "img.png"
    Image.new("RGB", (1000, 500), (20, 90, 160)).save(image)
    viz = tmp_path / "viz" / "out.png"
    assert (
        cli.main(
            [
                "ask",
                str(image),
                "What color is the cup?",
                "--option",
                "red",
                "--option",
                "blue",
                "--model",
                "m",
                "--viz",
                str(viz),
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["answer"] == "A" and printed["targets"] == ["cup", "dog"]
    assert printed["rois"][0][1] == {"box": [500.0, 0.0, 1000.0, 250.0], "relevance": 0.4, "confidence": 0.1}
    assert printed["forward_passes"]["verify"] == 3 and printed["config"]["layers"] == [14, 32]
    picture = Image.open(viz)
    assert picture.size == (768 * 3, 384)  # overview + one panel per target, longer side 768
    pixels = picture.convert("RGB")
    assert pixels.getpixel((200, 300)) == (20, 90, 160)  # overview panel: the image itself
    # the first target's map is hot in its bottom-right cell only
    assert pixels.getpixel((768 + 50, 50)) == (20, 90, 160)
    red, green, blue = pixels.getpixel((768 + 740, 370))
    assert red > 150 and red > blue + 30  # the heat scale's hot end (pale yellow) over the blue image
    assert cli.main(["ask", str(tmp_path / "missing.png"), "q", "--model", "m"]) == 2


def test_ask_on_a_reduced_decode_prints_full_image_boxes_and_a_note(tmp_path, monkeypatch, capsys):
    from focus_modules.eval import images as image_io

    monkeypatch.setattr(cli, "build_answerer", lambda *a: (_VizAnswerer(), FocusConfig.preset("llava-1.5")))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 200_000)  # 1000 x 500 decodes at 1/2
    image = tmp_path / "img.jpg"
    Image.new("RGB", (1000, 500), (20, 90, 160)).save(image)
    assert cli.main(["ask", str(image), "What color is the cup?", "--model", "m", "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["rois"][0][1]["box"] == [500.0, 0.0, 1000.0, 250.0]  # _VizAnswerer saw 500 x 250
    assert "decoded at 1/2 scale" in captured.err and any("1/2 scale" in note for note in printed["notes"])


def test_console_script_help():
    done = subprocess.run([sys.executable, "-m", "focus_modules.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "ask" in done.stdout and "eval" in done.stdout and "demo" in done.stdout


def test_eval_categories_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "build_answerer", _fake_build([]))
    data = make_vstar(tmp_path / "vstar")
    base = ["eval", "--model", "m", "--dataset", "vstar", "--data", str(data), "--no-progress"]
    assert cli.main([*base, "--out", str(tmp_path / "default.jsonl")]) == 0
    assert {r["category"] for r in read_rows(tmp_path / "default.jsonl")} == {"attribute", "spatial"}
    assert cli.main([*base, "--out", str(tmp_path / "all.jsonl"), "--categories", "all"]) == 0
    assert {r["category"] for r in read_rows(tmp_path / "all.jsonl")} == {"attribute", "spatial", "counting"}
    assert cli.main([*base, "--out", str(tmp_path / "c.jsonl"), "--categories", "counting,relative_position"]) == 0
    assert [r["id"] for r in read_rows(tmp_path / "c.jsonl")] == ["counting/count_1", "relative_position/sa_7"]


def test_eval_protocol_flags(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "build_answerer", _fake_build(calls))
    data = make_vstar(tmp_path / "vstar")
    base = ["eval", "--model", "m", "--dataset", "vstar", "--data", str(data), "--no-progress"]
    assert cli.main([*base, "--out", str(tmp_path / "l.jsonl"), "--protocol", "lmms-eval"]) == 0
    rows = read_rows(tmp_path / "l.jsonl")
    assert rows[0]["protocol"] == "lmms-eval" and rows[0]["prompt"].endswith("given choices directly.")
    assert "(lmms-eval protocol, generate)" in capsys.readouterr().out
    # refused before the model is loaded
    assert (
        cli.main([*base, "--out", str(tmp_path / "x.jsonl"), "--protocol", "lmms-eval", "--answer-scheme", "logits"])
        == 2
    )
    assert "--protocol paper" in capsys.readouterr().err and len(calls) == 1


@pytest.fixture
def two_gpus(monkeypatch):
    """CUDA mocked as two GPUs; ``set_device`` checks its argument as torch's does and records
    the index it was given."""
    import torch
    from torch.cuda._utils import _get_device_index

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(_get_device_index(device)))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return chosen


@pytest.mark.parametrize(
    "device,resolved", [("auto", "cuda:0"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1"), ("cpu", "cpu")]
)
def test_device_resolution_with_gpus(two_gpus, device, resolved):
    assert cli.resolve_device(device) == resolved
    assert two_gpus == ([] if resolved == "cpu" else [int(resolved[-1])])


def test_cuda_means_this_ranks_gpu_under_torchrun(two_gpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cli.resolve_device("cuda") == "cuda:1" and two_gpus == [1]


def test_set_device_without_an_index_is_what_fails(two_gpus):
    import torch

    # The mock refuses what torch refuses, so the tests above would catch a device passed without its index.
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))


@pytest.mark.parametrize(
    "device,match",
    [("cuda:2", r"2 CUDA device\(s\), cuda:0..cuda:1"), ("gpu", "'gpu' is not a device"), ("mps", "only cpu and cuda")],
)
def test_bad_devices_with_gpus(two_gpus, device, match):
    with pytest.raises(ValueError, match=match):
        cli.resolve_device(device)


def test_devices_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.resolve_device("auto") == "cpu"
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="CUDA is not available.*--device cpu"):
            cli.resolve_device(device)
