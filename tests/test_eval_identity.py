import shutil
import types

from eval_fixtures import make_hrbench, make_vstar
from test_cli import _fake_build
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from focus_modules import cli
from focus_modules.eval import read_rows
from focus_modules.eval.identity import file_fingerprint, identity_differences, model_fingerprint


def test_file_fingerprints_follow_content_not_location(tmp_path):
    four_k = make_hrbench(tmp_path / "hr_bench_4k.tsv")
    assert file_fingerprint(four_k).startswith(f"hr_bench_4k.tsv: {four_k.stat().st_size} bytes, sha1 ")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(four_k, moved / four_k.name)
    assert file_fingerprint(moved / four_k.name) == file_fingerprint(four_k)
    four_k.write_bytes(four_k.read_bytes().replace(b"red", b"rod"))  # same size, other content
    assert file_fingerprint(four_k) != file_fingerprint(moved / four_k.name)
    folder = make_vstar(tmp_path / "vstar")
    before = file_fingerprint(folder)
    assert before.startswith("vstar/: 8 files, ")
    shutil.copytree(folder, tmp_path / "copy" / "vstar")
    assert file_fingerprint(tmp_path / "copy" / "vstar") == before
    (folder / "counting" / "count_1.json").write_text("{}")
    assert file_fingerprint(folder) != before


def test_model_fingerprint_ignores_where_the_model_came_from():
    def model(**text):
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=32, num_attention_heads=4), text_config=LlamaConfig(**text)
        )
        return types.SimpleNamespace(config=config)

    first, again = model(num_hidden_layers=2), model(num_hidden_layers=2)
    again.config._name_or_path = "/somewhere/else"
    assert model_fingerprint(first) == model_fingerprint(again)
    assert model_fingerprint(first)["config_sha1"] != model_fingerprint(model(num_hidden_layers=3))["config_sha1"]
    assert model_fingerprint(object()) == {"config_sha1": None, "revision": None}


def test_identity_differences_name_nested_fields():
    old = {"model": "a", "config": {"k": 30, "layers": [14, 32]}}
    assert identity_differences(old, {"model": "a", "config": {"k": 30, "layers": (14, 32)}}) == []
    assert identity_differences(old, {"model": "b", "config": {"k": 15, "layers": (14, 32)}, "protocol": "x"}) == [
        "model: 'a' in the file, 'b' now",
        "config.k: 30 in the file, 15 now",
        "protocol: None in the file, 'x' now",
    ]


def test_eval_refuses_hrbench_8k_into_a_4k_results_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_answerer", _fake_build([]))
    four_k = make_hrbench(tmp_path / "hr_bench_4k.tsv")
    eight_k = make_hrbench(tmp_path / "hr_bench_8k.tsv")  # same ids, as the real files
    out = tmp_path / "r.jsonl"
    base = ["eval", "--model", "m", "--dataset", "hrbench", "--out", str(out), "--no-progress"]
    assert cli.main([*base, "--data", str(four_k)]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--data", str(eight_k)]) == 2
    err = capsys.readouterr().err
    assert "data: 'hr_bench_4k.tsv" in err and "'hr_bench_8k.tsv" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main([*base, "--data", str(four_k), "--model", "other"]) == 2
    assert "model: 'm' in the file, 'other' now" in capsys.readouterr().err
    assert cli.main([*base, "--data", str(eight_k), "--overwrite"]) == 0
    assert {row["run"]["data"].split(":")[0] for row in read_rows(out)} == {"hr_bench_8k.tsv"}
