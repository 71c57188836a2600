"""The lmms-eval plugin end to end: lmms-eval's own ``simple_evaluate`` with ``--model focus``
(found through the ``lmms_eval.models`` entry point) on a local task in lmms-eval's V*Bench
layout, built from ``python -m focus_modules.synthetic`` files, with the shipped tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT

pytestmark = pytest.mark.slow

TASK = "vstar_bench_synthetic"  # the "vstar_bench" prefix picks the plugin's V*Bench question reader
N_PER_FAMILY = 2
MODEL_ARGS = f"pretrained={SHIPPED_CHECKPOINT},n_steps=2,layers=[3,6],dataset=vstar,dtype=float32,device=cpu"

# The task's functions: lmms-eval's own V*Bench prompt, scorer and aggregation; images from files.
TASK_UTILS = """
from PIL import Image
from lmms_eval.tasks.vstar_bench.utils import vstar_aggregate_results as aggregate
from lmms_eval.tasks.vstar_bench.utils import vstar_doc_to_text as doc_to_text
from lmms_eval.tasks.vstar_bench.utils import vstar_process_results as process_results


def doc_to_visual(doc):
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]
"""

TASK_YAML = """
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: "label"
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: vstar_overall_acc
    aggregation: !function utils.aggregate
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: "\\nAnswer with the option's letter from the given choices directly."
"""


def vstar_rows(root: Path) -> list[dict]:
    """lmms-eval's V*Bench rows (``text`` = question + ``(A) ...`` options, ``label``,
    ``category``, ``question_id``) from the synthetic writer's NAME.json files; the correct
    option (first in the files) is moved to position ``i % len(options)``."""
    rows = []
    for i, path in enumerate(sorted(root.glob("*/*.json"))):
        record = json.loads(path.read_text())
        correct, *others = record["options"]
        options = others[:]
        options.insert(i % len(record["options"]), correct)
        letters = "ABCD"[: len(options)]
        text = record["question"] + " " + " ".join(f"({letter}) {o}" for letter, o in zip(letters, options))
        rows.append(
            {
                "question_id": path.stem,
                "image": str(path.with_suffix(".jpg")),
                "text": text,
                "label": letters[options.index(correct)],
                "category": path.parent.name,
            }
        )
    return rows


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_eval_task")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "focus_modules.synthetic",
            "--out",
            str(root / "synthetic"),
            "--n",
            str(N_PER_FAMILY),
            "--seed",
            "5",
        ],
        check=True,
        capture_output=True,
    )
    rows = vstar_rows(root / "synthetic")
    (root / "vstar.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(TASK_UTILS)
    (tasks / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=root / "vstar.jsonl"))
    return root


@pytest.fixture(scope="module")
def evaluation(task_dir, tmp_path_factory):
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf_datasets"))
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir / "tasks"))
    return simple_evaluate(
        model="focus",
        model_args=MODEL_ARGS,
        tasks=[TASK],
        batch_size=4,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
    )


def test_simple_evaluate_scores_focus_answers(task_dir, evaluation):
    rows = [json.loads(line) for line in (task_dir / "vstar.jsonl").read_text().splitlines()]
    samples = evaluation["samples"][TASK]
    assert len(samples) == len(rows) == 3 * N_PER_FAMILY
    hits = 0
    for sample in samples:
        row = rows[sample["doc_id"]]
        (answer,) = sample["filtered_resps"]
        score = sample["vstar_overall_acc"]
        assert score["ground_truth"] == row["label"]
        hits += score["score"]
        assert isinstance(answer, str)
        # lmms-eval's context went to step VI verbatim: its prompt, options as "A. ..." lines.
        context = sample["arguments"][0]
        assert context.startswith(row["text"].split(" (A)")[0]) and "\nA. " in context
    accuracy = evaluation["results"][TASK]["vstar_overall_acc,none"]
    assert accuracy == pytest.approx(100.0 * hits / len(samples))


def test_forward_passes_are_logged_per_sample(evaluation):
    for sample in evaluation["samples"][TASK]:
        (counts,) = sample["token_counts"]
        record = counts["focus"]
        passes = record["forward_passes"]
        assert record["method"] == "focus" and set(passes) == {"targets", "relevance", "verify", "answer"}
        assert passes["targets"] == passes["answer"] == 1
        targets = len(record["targets"])  # several targets share one image-prefix pass
        assert targets >= 1 and passes["relevance"] == (targets if targets == 1 else 1 + targets)
        assert record["fp_search"] == passes["relevance"] + passes["verify"]
        expected_type = 2 if sample["doc"]["category"] == "counting" else 1
        assert record["question_type"] == expected_type


def test_focus_is_registered_through_the_entry_point():
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    assert MODEL_REGISTRY_V2.resolve("focus").class_path == "focus_modules.integrations.lmms_eval_model.FocusLmms"
    assert get_model("focus").__name__ == "FocusLmms"


def test_focus_is_registered_when_the_plugin_module_is_imported_first():
    """Importing the plugin module before lmms-eval's registry exists (a user's script, or a
    documentation tool walking the package) must not leave ``focus`` out of the registry."""
    script = (
        "import focus_modules.integrations.lmms_eval_model\n"
        "from lmms_eval.models import MODEL_REGISTRY_V2\n"
        "print(MODEL_REGISTRY_V2.resolve('focus').class_path)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("lmms_eval_model.FocusLmms")


def test_unsupported_requests_and_arguments_fail_clearly(evaluation):
    from lmms_eval.models import get_model

    focus = get_model("focus")
    with pytest.raises(ValueError, match=r"unknown \['n_step'\]; FocusConfig fields: layers, n_steps"):
        focus.create_from_arg_string(f"pretrained={SHIPPED_CHECKPOINT},n_step=2")
    with pytest.raises(ValueError, match="method must be one of"):
        focus.create_from_arg_string(f"pretrained={SHIPPED_CHECKPOINT},method=zoom")
    model = focus.create_from_arg_string(MODEL_ARGS)
    assert model.config.layers == (3, 6) and model.config.n_steps == 2 and model.config.s_dist == 2.0
    with pytest.raises(NotImplementedError, match="generate_until tasks only.*loglikelihood"):
        model.loglikelihood([])
    with pytest.raises(NotImplementedError, match="single-round"):
        model.generate_until_multi_round([])
