"""The shipped tiny model: it loads with from_pretrained, the stock LLaVA-1.5 adapter serves it,
and on held-out questions, through the public ``focus eval`` path, FOCUS beats vanilla by the
margin the model card measured (the end-to-end regression test: a transposed grid, wrong token
positions or a wrong crop make FOCUS lose that margin)."""

from __future__ import annotations

import json

import pytest
import torch

from focus_modules import cli
from focus_modules.adapters import LlavaAdapter, adapter_for
from focus_modules.synthetic import write_vstar_layout
from focus_modules.synthetic.heldout import REGRESSION_SEED
from focus_modules.synthetic.tiny_llava import (
    SHIPPED_CHECKPOINT,
    TINY_ANSWER_SCHEME,
    load_tiny_focus_llava,
    tiny_focus_config,
)

REGRESSION_QUESTIONS = 40
# FOCUS - vanilla on the attribute questions, in points: the target of the tiny model.
MIN_LIFT = 25.0


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_tiny_focus_llava()


def test_checkpoint_files_and_size():
    names = {p.name for p in SHIPPED_CHECKPOINT.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "README.md",
        "tokenizer.json",
        "processor_config.json",
        "focus_config.json",
        "heldout_benchmark.json",
    } <= names
    total = sum(p.stat().st_size for p in SHIPPED_CHECKPOINT.iterdir())
    assert total <= 20 * 2**20


def test_checkpoint_has_the_llava_hf_layout_that_transformers_4_46_reads():
    from safetensors import safe_open

    with safe_open(SHIPPED_CHECKPOINT / "model.safetensors", "pt") as weights:
        vision = [k for k in weights.keys() if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    image_processor = json.loads((SHIPPED_CHECKPOINT / "preprocessor_config.json").read_text())
    assert image_processor["image_processor_type"] == "CLIPImageProcessor"
    assert "image_processor" not in json.loads((SHIPPED_CHECKPOINT / "processor_config.json").read_text())
    assert json.loads((SHIPPED_CHECKPOINT / "chat_template.json").read_text())["chat_template"]
    assert (
        json.loads((SHIPPED_CHECKPOINT / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )


def test_stock_adapter_serves_it(shipped):
    model, processor = shipped
    adapter = adapter_for(model, processor)
    assert type(adapter) is LlavaAdapter
    assert adapter.grid_size == 24  # 144 px, 6 px patches: LLaVA-1.5's own map size
    layers = json.loads((SHIPPED_CHECKPOINT / "focus_config.json").read_text())["layers"]
    assert adapter.num_layers() >= layers[1] and tiny_focus_config().layers == tuple(layers)
    assert adapter.default_config().layers == tuple(layers)  # what the CLI and FocusWrapper use
    yes, no = adapter.yes_no_ids()
    assert yes and no


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    """40 held-out attribute questions written by the public writer, answered by ``focus eval``
    with vanilla and with FOCUS (n_steps = 2, the checkpoint's own settings), both with the tiny
    model's answer scheme."""
    root = tmp_path_factory.mktemp("regression")
    write_vstar_layout(
        root / "data", REGRESSION_QUESTIONS, seed=REGRESSION_SEED, families=("attribute",), progress=False
    )
    summaries = {}
    for method in ("vanilla", "focus"):
        out = root / f"{method}.jsonl"
        assert (
            cli.main(
                [
                    "eval",
                    "--model",
                    str(SHIPPED_CHECKPOINT),
                    "--dataset",
                    "vstar",
                    "--data",
                    str(root / "data"),
                    "--categories",
                    "all",
                    "--method",
                    method,
                    "--n-steps",
                    "2",
                    "--answer-scheme",
                    TINY_ANSWER_SCHEME,
                    "--batch-size",
                    "8",
                    "--device",
                    "cpu",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        summaries[method] = (json.loads(out.with_suffix(".summary.json").read_text()), rows)
    return summaries


@pytest.mark.slow
def test_both_methods_run_every_step_on_heldout_questions(regression_run):
    (vanilla, vanilla_rows), (focus, focus_rows) = regression_run["vanilla"], regression_run["focus"]
    assert vanilla["n"] == focus["n"] == REGRESSION_QUESTIONS and not vanilla["errors"] and not focus["errors"]
    assert all(r["forward_passes"]["relevance"] == 0 and r["answer"] in "ABCD" for r in vanilla_rows)
    for row in focus_rows:
        assert row["forward_passes"]["relevance"] >= 1 and row["forward_passes"]["verify"] >= 1
        assert row["targets"] and row["rois"] and row["answer"] in "ABCD"


@pytest.mark.slow
def test_focus_beats_vanilla_on_heldout_attribute_questions(regression_run):
    vanilla, focus = regression_run["vanilla"][0], regression_run["focus"][0]
    print(f"regression set: vanilla {vanilla['accuracy']:.1f} %, FOCUS {focus['accuracy']:.1f} %")
    assert focus["accuracy"] - vanilla["accuracy"] >= MIN_LIFT, (vanilla["accuracy"], focus["accuracy"])


def test_focus_demo_command(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Question: What is the mark color of the" in printed
    assert "vanilla:" in printed and "FOCUS (n_steps=2):" in printed and "visual search" in printed
    # the default scene is the one DEMO_SCENE's comment says: vanilla wrong, FOCUS right, map on the object
    lines = printed.splitlines()
    assert "(wrong)" in next(line for line in lines if "vanilla:" in line)
    assert "(correct)" in next(line for line in lines if "FOCUS (n_steps=2):" in line)
    assert "The relevance map's peak lies within one cell of the asked object." in lines
    assert "Measured on" in printed and "Reproduce (CHECKPOINT=" in printed and "focus eval" in printed
    from PIL import Image

    with Image.open(out) as picture:
        assert picture.width > picture.height > 0  # image panel + one relevance-map panel
