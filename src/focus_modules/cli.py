"""The ``focus`` command (docs/design.md §12).

    focus demo [--out focus_demo.png] [--scene N] [--family attribute|spatial|counting]
    focus ask IMAGE "QUESTION" [--option TEXT]... --model PATH_OR_ID [--method focus|vanilla]
              [--n-steps N] [--set FIELD=VALUE]... [--viz OUT.png] [--json]
    focus eval --model PATH_OR_ID --dataset vstar|hrbench|mme-rw-lite --data PATH
               [--method focus|vanilla] [--n-steps N] [--set FIELD=VALUE]... [--limit N]
               [--categories all|FOLDER,...] [--protocol paper|lmms-eval] [--answer-scheme generate|logits]
               --out RESULTS.jsonl [--overwrite] [--summary SUMMARY.json]
    focus plot RUN [RUN...] --out PLOT.png [--label TEXT]... [--title TEXT]

``--set`` overrides any FocusConfig field, converted to the field's type
(``--set layers=2,6 --set k=15 --set smooth_sigma=none``). Run ``focus eval`` under
``torchrun --nproc_per_node=G`` to split a benchmark over G GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focus_modules.config import ANSWER_SCHEMES, DATASETS, METHODS, PROTOCOLS, FocusConfig, read_model_settings

DTYPES = ("auto", "float32", "float16", "bfloat16")
ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")


# ------------------------------------------------------------------------- config overrides


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["layers=2,6", "k=15"]`` -> ``{"layers": (2, 6), "k": 15}``, typed by FocusConfig.

    Raises:
        ValueError: an item is not ``FIELD=VALUE``, names no FocusConfig field, or its value
            does not convert to the field's type.
    """
    hints = typing.get_type_hints(FocusConfig)
    overrides = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        if name not in hints:
            raise ValueError(f"--set {item!r}: FocusConfig has no field {name!r}; fields: {', '.join(hints)}")
        try:
            overrides[name] = _convert(text.strip(), hints[name])
        except ValueError as err:
            raise ValueError(f"--set {item!r}: {name} expects {_type_name(hints[name])} ({err})") from None
    return overrides


def _convert(text: str, hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null"):
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _convert(text, hint)
    if hint is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean")
    if hint in (int, float, str):
        return hint(text)
    if typing.get_origin(hint) is tuple:
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        kinds = [args[0]] * len(parts) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(parts):
            raise ValueError(f"expected {len(kinds)} comma-separated values, got {len(parts)}")
        return tuple(_convert(p.strip(), k) for p, k in zip(parts, kinds))
    raise ValueError(f"cannot parse a value of type {hint}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


# ---------------------------------------------------------------------------- model loading


def resolve_device(device: str) -> str:
    """The device the model goes to, as ``"cpu"`` or ``"cuda:N"``; a CUDA device is made current.

    ``"auto"`` is CUDA when available, else the CPU. ``"cuda"`` without an index is this
    process's GPU: ``cuda:LOCAL_RANK`` under torchrun, else the current CUDA device.

    Raises:
        ValueError: ``device`` names no device, CUDA is not available, or there is no GPU with
            that index.
    """
    import torch

    from focus_modules.eval.distributed import local_rank, rank_and_world

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type != "cuda":
        raise ValueError(f"--device {device!r}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu"
        )
    index = parsed.index
    if index is None:
        index = local_rank() if rank_and_world()[1] > 1 else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def checkpoint_adapter(model_id: str):
    """The adapter class that will serve the checkpoint ``model_id``, read from its
    ``config.json`` alone (no weights), and the checkpoint's config.

    Raises:
        FileNotFoundError: ``model_id`` is a local path that does not exist or holds no
            ``config.json``.
        ValueError: the checkpoint's model class has no FOCUS adapter.
        OSError: a hub id that cannot be fetched.
    """
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    from focus_modules.adapters import adapter_class_for, unsupported_model_message

    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"--model {model_id}: {path} holds no config.json; expected a model folder "
                "written by save_pretrained, or a hub id"
            )
    elif model_id.startswith((".", "/", "~")) or str(path.parent) not in (".", "") and path.parent.exists():
        raise FileNotFoundError(f"--model {model_id}: no such folder")
    config = AutoConfig.from_pretrained(model_id)
    names = list(getattr(config, "architectures", None) or [])
    if not names and config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        names = [MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[config.model_type]]
    for name in names:
        model_class = getattr(transformers, name, None)
        adapter_cls = adapter_class_for(model_class if isinstance(model_class, type) else name)
        if adapter_cls is not None:
            return adapter_cls, config
    raise ValueError(unsupported_model_message(names[0] if names else f"model type {config.model_type!r}"))


def rank_gpus(local_rank: int, local_world: int, device_count: int) -> list[int]:
    """The GPUs of one of ``local_world`` ranks on a node with ``device_count`` GPUs: an equal,
    contiguous share (``--device-map auto`` under torchrun: model parallel inside a rank, data
    parallel across ranks)."""
    share = device_count // local_world
    if share < 1:
        raise ValueError(
            f"--device-map auto with {local_world} ranks per node needs at least as many GPUs, found {device_count}"
        )
    return list(range(local_rank * share, (local_rank + 1) * share))


def device_map_kwargs(device_map: str) -> dict:
    """``from_pretrained`` keyword arguments for ``--device-map``: ``"auto"`` spreads the
    layers over the visible GPUs (accelerate); under torchrun, over this rank's share of them."""
    import os

    import torch

    from focus_modules.eval.distributed import local_rank, rank_and_world

    world = rank_and_world()[1]
    if device_map != "auto" or world == 1 or not torch.cuda.is_available():
        return {"device_map": device_map}
    gpus = rank_gpus(local_rank(), int(os.environ.get("LOCAL_WORLD_SIZE", world)), torch.cuda.device_count())
    torch.cuda.set_device(gpus[0])
    return {"device_map": "auto", "max_memory": {gpu: torch.cuda.mem_get_info(gpu)[0] for gpu in gpus}}


def load_model(
    model_id: str,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str = "sdpa",
    device_map: str | None = None,
):
    """Load an image-text-to-text model and its processor from a local folder or a hub id.

    A local folder needs no network. ``flash_attention_2`` needs the ``flash-attn`` package
    (``pip install focus-modules[flash]``). ``device_map`` (e.g. ``"auto"``) places the model
    with accelerate (``pip install focus-modules[multi-gpu]``) instead of moving it to ``device``.

    Returns:
        ``(model, processor)``, the model in eval mode on ``device`` (or placed by ``device_map``).
    """
    import importlib.util

    import torch
    import transformers
    from packaging.version import Version
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"--attn-implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("--attn-implementation flash_attention_2 needs flash-attn: pip install 'focus-modules[flash]'")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise ValueError("--device-map needs accelerate: pip install 'focus-modules[multi-gpu]'")
    placement = device_map_kwargs(device_map) if device_map is not None else {}
    device = resolve_device(device) if device_map is None else None
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    # transformers 4.56 renamed `torch_dtype` to `dtype`.
    dtype_kwarg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = AutoModelForImageTextToText.from_pretrained(
        model_id, attn_implementation=attn_implementation, **{dtype_kwarg: torch_dtype}, **placement
    )
    processor = AutoProcessor.from_pretrained(model_id)
    return (model if device is None else model.to(device)).eval(), processor


def build_answerer(
    model_id: str,
    dtype: str,
    device: str,
    attn_implementation: str,
    dataset: str | None,
    n_steps: int | None,
    overrides: dict[str, Any],
    device_map: str | None = None,
):
    """Check the settings, then load the model and wrap it: returns ``(FocusWrapper, FocusConfig)``.

    The configuration is the family's Table 7 preset fitted to the model's depth, then the
    model folder's ``focus_config.json`` (if any), then ``n_steps`` (``None``: the file's, else
    8) and ``overrides``. Everything that can be checked without the weights (device, model
    family, settings) is checked before they are loaded.
    """
    from focus_modules.adapters import adapter_for
    from focus_modules.wrapper import FocusWrapper

    device = resolve_device(device)
    adapter_cls, checkpoint_config = checkpoint_adapter(model_id)
    explicit = {**overrides, **({} if n_steps is None else {"n_steps": n_steps})}
    settings = {**read_model_settings(model_id), **explicit}
    draft = dataclasses.replace(
        FocusConfig.preset(adapter_cls.family, dataset=dataset, n_steps=settings.get("n_steps", 8)), **settings
    )
    depth = getattr(checkpoint_config.get_text_config(), "num_hidden_layers", None)
    if "layers" in settings and depth is not None:
        draft.check_layers(depth)
    model, processor = load_model(model_id, dtype, device, attn_implementation, device_map)
    adapter = adapter_for(model, processor)
    # The folder's own settings come with the adapter's default (the model was loaded from it).
    config = dataclasses.replace(adapter.default_config(dataset=dataset, n_steps=n_steps), **overrides)
    return FocusWrapper(model, processor, config, adapter=adapter), config


# --------------------------------------------------------------------------------- commands


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_non_negative_int = _int_at_least(0)
_positive_int = _int_at_least(1)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local model folder or hub id")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="focus",
        help="FOCUS, the plain model (vanilla) or a search baseline (ZoomEye, ViCrop) (default focus)",
    )
    parser.add_argument(
        "--n-steps",
        type=_non_negative_int,
        default=None,
        help="ROIs verified per target (Table 7; default: the model folder's focus_config.json, else 8)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a FocusConfig field, e.g. --set layers=2,6 --set k=15 (repeatable)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="model dtype (default: as saved)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--attn-implementation",
        choices=ATTN_IMPLEMENTATIONS,
        default="sdpa",
        help="attention kernel (default sdpa; flash_attention_2 needs flash-attn)",
    )
    parser.add_argument(
        "--device-map",
        default=None,
        help="'auto': spread a model too large for one GPU over the GPUs (accelerate; under "
        "torchrun, over each rank's share of them); replaces --device",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focus", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer one question about one image")
    ask.add_argument("image", help="image file")
    ask.add_argument("question", help="the question")
    ask.add_argument(
        "--option",
        dest="options",
        action="append",
        default=None,
        metavar="TEXT",
        help="a multiple-choice option (repeat; shown as (A), (B), ...)",
    )
    _add_model_arguments(ask)
    ask.add_argument("--viz", type=Path, metavar="OUT.png", help="write the image, the ROIs and the relevance maps")
    ask.add_argument("--json", action="store_true", help="print the targets, ROIs, FPs and timings as JSON")
    ask.set_defaults(run=cmd_ask)

    ev = commands.add_parser("eval", help="run a benchmark; resumable; splits over GPUs under torchrun")
    _add_model_arguments(ev)
    ev.add_argument("--dataset", choices=DATASETS, required=True)
    ev.add_argument("--data", type=Path, required=True, help="benchmark folder or file (layouts: README)")
    ev.add_argument("--limit", type=_positive_int, help="only the first N questions")
    ev.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="paper",
        help="prompt and option order: the paper's (A.2: the model's own option lines, strict letter "
        "match; default) or lmms-eval's per-dataset prompt; both extractions are always reported",
    )
    ev.add_argument(
        "--answer-scheme",
        choices=ANSWER_SCHEMES,
        default="generate",
        help="generate the option letter (default, the paper's results) or logits matching "
        "(C.5: one prompt per option, the likeliest option text wins)",
    )
    ev.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="RESULTS.jsonl",
        help="one JSON line per question; rerun with the same file to resume",
    )
    ev.add_argument(
        "--overwrite",
        action="store_true",
        help="delete --out (and its summary) first and answer every question again, instead of resuming",
    )
    ev.add_argument(
        "--summary",
        type=Path,
        metavar="SUMMARY.json",
        help="metrics + config (default: RESULTS.summary.json beside --out)",
    )
    ev.add_argument("--batch-size", type=_positive_int, default=1, help="questions per model call (default 1)")
    ev.add_argument("--seed", type=int, default=0, help="seed of V*Bench's option order (default 0)")
    ev.add_argument(
        "--categories",
        type=_categories,
        metavar="all|FOLDER[,FOLDER...]",
        help="V*Bench folders to read (default direct_attributes,relative_position: the "
        "benchmark's 191 questions; 'all' reads every folder, e.g. the synthetic set's counting/)",
    )
    ev.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ev.set_defaults(run=cmd_eval)

    plot = commands.add_parser("plot", help="accuracy against search forward passes of several focus eval runs")
    plot.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN", help="a focus eval output: RESULTS.jsonl, its summary, or a folder"
    )
    plot.add_argument("--out", type=Path, required=True, metavar="PLOT.png", help="the PNG to write")
    plot.add_argument("--label", dest="labels", action="append", default=None, help="a run's label (one per run)")
    plot.add_argument("--title", default="", help="the plot's title")
    plot.set_defaults(run=cmd_plot)

    demo = commands.add_parser("demo", help="vanilla vs FOCUS with the shipped tiny model on a synthetic image")
    from focus_modules import demo as demo_module

    demo_module.add_arguments(demo)
    demo.set_defaults(run=demo_module.run)
    return parser


def cmd_ask(args: argparse.Namespace) -> int:
    from focus_modules.eval.images import load_image_file, reduced_scale, reduced_scale_note
    from focus_modules.eval.runner import config_dict, full_resolution_rois
    from focus_modules.results import roi_record

    if not args.question.strip():
        raise ValueError("the question is empty")
    if args.options is not None and not all(option.strip() for option in args.options):
        raise ValueError(f"--option must not be empty, got {args.options}")
    overrides = parse_overrides(args.overrides)
    image = load_image_file(args.image)
    answerer, config = build_answerer(
        args.model, args.dtype, args.device, args.attn_implementation, None, args.n_steps, overrides, args.device_map
    )
    options = [args.options] if args.options else None
    (result,) = answerer.answer([image], [args.question], options=options, method=args.method)
    notes = list(getattr(result, "notes", []))
    rois = [[roi_record(roi) for roi in target] for target in result.rois]
    scale = reduced_scale(image)
    if scale is not None:  # --viz draws the decoded pixels; the JSON boxes are the file's
        rois, notes = full_resolution_rois(rois, scale), [*notes, reduced_scale_note(scale)]
    for note in notes:
        print(f"focus ask: note: {note}", file=sys.stderr)
    if args.viz:
        from focus_modules.eval.viz import render_result

        args.viz.parent.mkdir(parents=True, exist_ok=True)
        render_result(image, result, map_extents=result.map_extents).save(args.viz)
    if args.json:
        print(
            json.dumps(
                {
                    "answer": result.answer,
                    "targets": list(result.targets),
                    "question_type": result.question_type,
                    "rois": rois,
                    "forward_passes": dict(result.forward_passes),
                    "timings": dict(result.timings),
                    "notes": notes,
                    "config": config_dict(config),
                },
                indent=2,
            )
        )
    else:
        print(result.answer)
    return 0


def _categories(text: str) -> str | tuple[str, ...]:
    """``--categories``: ``all`` or comma-separated folder names."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected 'all' or comma-separated folder names")
    return "all" if names == ("all",) else names


def cmd_eval(args: argparse.Namespace) -> int:
    from focus_modules.eval.datasets import load_dataset
    from focus_modules.eval.identity import file_fingerprint, model_fingerprint
    from focus_modules.eval.runner import run_eval

    if args.answer_scheme == "logits" and args.protocol != "paper":
        raise ValueError("--answer-scheme logits is the paper's scheme (C.5): use it with --protocol paper")
    overrides = parse_overrides(args.overrides)
    questions = load_dataset(args.dataset, args.data, seed=args.seed, categories=args.categories)[: args.limit]
    answerer, config = build_answerer(
        args.model,
        args.dtype,
        args.device,
        args.attn_implementation,
        args.dataset,
        args.n_steps,
        overrides,
        args.device_map,
    )
    # what determines the answers (a rerun that differs is refused) vs. facts of this run only
    identity = {
        "model": args.model,
        "model_fingerprint": model_fingerprint(getattr(answerer, "model", None)),
        "data": file_fingerprint(args.data),
        "dtype": args.dtype,
    }
    if args.dataset == "vstar":
        identity["option_seed"] = args.seed
    info = {
        "data_path": str(args.data),
        "device": args.device,
        "attn_implementation": args.attn_implementation,
        "categories": args.categories,
        "limit": args.limit,
    }
    summary = run_eval(
        questions,
        answerer,
        args.out,
        dataset=args.dataset,
        method=args.method,
        config=config,
        protocol=args.protocol,
        answer_scheme=args.answer_scheme,
        batch_size=args.batch_size,
        summary=args.summary,
        info=info,
        identity=identity,
        overwrite=args.overwrite,
        progress=args.progress,
        prompt_of=answerer.adapter.answer_prompt,
    )
    if summary is not None:
        print(format_summary(summary))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from focus_modules.eval.plot import plot_runs

    print(f"wrote {plot_runs(args.runs, args.out, args.labels, args.title)}")
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """A few human lines for the end of ``focus eval``."""

    def pct(value):
        return "-" if value is None else f"{value:.2f}%"

    def num(value, unit=""):
        return "-" if value is None else f"{value:.2f}{unit}"

    lines = [
        f"{summary['dataset']} / {summary['method']} ({summary['protocol']} protocol, {summary['answer_scheme']}): "
        f"accuracy {pct(summary['accuracy'])} (lenient {pct(summary['accuracy_lenient'])}, lmms-eval extraction "
        f"{pct(summary['accuracy_lmms_eval'])}) on {summary['n']} of {summary['n_questions']} questions, "
        f"{summary['errors']} errors",
        "  " + ", ".join(f"{name} {pct(v['accuracy'])}" for name, v in summary["per_category"].items()),
        *(
            "  " + ", ".join(f"{value} {pct(v['accuracy'])}" for value, v in values.items())
            for name, values in summary["per_group"].items()
            if name != "cycle"
        ),
    ]
    cycles = summary.get("cycle_mean")
    if cycles:
        lines.append(
            f"  mean over {cycles['n_cycles']} cycle categories: {pct(cycles['accuracy'])} ("
            + ", ".join(f"{name} {pct(v['accuracy'])}" for name, v in cycles["per_category"].items())
            + ")"
        )
    search = f"  search FPs {num(summary['fp_search_mean'])}/question"
    if summary["fp_search_unshared_mean"] != summary["fp_search_mean"]:
        search += f" spent ({num(summary['fp_search_unshared_mean'])} per question's own search)"
    lines.append(
        search
        + f", {num(summary['seconds_mean'], ' s')}/question"
        + (f", peak GPU memory {summary['peak_gpu_memory_gb']:.2f} GiB" if summary["peak_gpu_memory_gb"] else "")
    )
    if summary.get("roi_recall") is not None:
        lines.append(f"  ROI recall {pct(summary['roi_recall'])}, top-ROI recall {pct(summary['top_roi_recall'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, ImportError) as err:
        # One line: hub and loader errors can span several (the first says what went wrong).
        message = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        print(f"focus {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
