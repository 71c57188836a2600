"""Train the tiny LLaVA-1.5 that ships with focus_modules, from scratch, on a CPU.

``python examples/tiny_model/train.py --out runs/tiny --align-steps 600 --steps 4000 --save-every 250``
(``--resume`` continues a stopped run from ``OUT/state.pt``). The shipped run's exact command
and measured stage results are in the model card (``focus_modules/assets/tiny-focus-llava``).

The recipe gives the tiny model the properties FOCUS relies on in large MLLMs, the way those
models get them (see ``data.py`` for the samples):

1. **Dense alignment** (``--align-steps``): the vision tower and projector alone, trained so
   that each projected patch lies near the language model's word embeddings of what the patch
   shows (colour + shape word of an object, colour word + "mark" of a mark, "background"),
   weighted by presence (a class covering a tenth of the patch is its word). This plays the
   role of a pretrained encoder plus LLaVA's feature-alignment stage, made dense: visual tokens
   read as words.
2. **Instruction data**: next-token loss on the replies of step-I naming, existence questions
   on ROI-sized crops, the mark colour on the views FOCUS builds, spatial and counting
   questions, and multiple choice on the whole image; the alignment loss stays on (weight
   ``--align-weight``) so the projector keeps speaking words.

What is never trained: no loss touches value vectors, attention, their similarities, relevance
maps or ROI choices, and no held-out or validation scene is seen (other seed tags). The word
embeddings are targets of the alignment loss only through ``detach()``; they move by the
next-token loss alone.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import OBJECT_CLASSES, SampleStream  # noqa: E402
from model import build_tiny_focus_llava, make_checkpoint_portable, set_image_size  # noqa: E402

from focus_modules.adapters import LlavaAdapter  # noqa: E402
from focus_modules.config import SETTINGS_FILE  # noqa: E402
from focus_modules.synthetic.tiny_llava import SHIPPED_CHECKPOINT, load_tiny_focus_llava, tiny_focus_config  # noqa: E402


def batches(stream, batch_size: int, pad_id: int):
    """Right-padded batches; text-only and image prompts in separate batches (alignment
    samples have no text). Each batch keeps the largest scene index it holds (to resume)."""
    pending = {True: [], False: []}
    for sample in stream:
        group = pending[sample["pixel_values"] is not None]
        group.append(sample)
        if len(group) < batch_size:
            continue
        batch = {"scene": max(s["scene"] for s in group)}
        if "input_ids" in group[0]:
            length = max(s["input_ids"].numel() for s in group)
            input_ids = torch.full((len(group), length), pad_id, dtype=torch.long)
            labels = torch.full((len(group), length), -100, dtype=torch.long)
            mask = torch.zeros((len(group), length), dtype=torch.long)
            for row, s in enumerate(group):
                n = s["input_ids"].numel()
                input_ids[row, :n], labels[row, :n], mask[row, :n] = s["input_ids"], s["labels"], 1
            batch.update(input_ids=input_ids, labels=labels, attention_mask=mask)
        if group[0]["pixel_values"] is not None:
            batch["pixel_values"] = torch.cat([s["pixel_values"] for s in group])
            batch["fractions"] = torch.from_numpy(np.stack([s["fractions"] for s in group]))
            batch["class_words"] = [s["class_words"] for s in group]
        group.clear()
        yield batch


# A mark covering this share of a patch or more is the patch's word (see presence_weights); a
# mark is 0.45 x its object's side, so below this it is no longer visible in the view.
MARK_PRESENCE_SHARE = 0.1
OBJECT_PATCH_WEIGHT = 10.0


def presence_weights(fractions: torch.Tensor, object_share: float) -> torch.Tensor:
    """How much each class's word counts in a patch's target: an object class weighs
    ``share / object_share``, a mark class ``share / MARK_PRESENCE_SHARE`` (each at most 1;
    renormalised if several add up past 1), background the rest. A 28-52 px object covers only
    2-11 % of a patch of the whole-image view, and a target in proportion to area would teach
    the projector to say "background" there; large MLLMs' visual tokens name a small object
    they contain, which is what FOCUS reads.

    Args:
        fractions: ``[..., NUM_CLASSES]`` class shares (class 0 = background; object classes
            ``1 .. len(COLORS)``, then the mark classes).
        object_share: the share of a patch from which an object counts fully (``--object-presence``).

    Returns:
        ``[..., NUM_CLASSES]`` weights summing to 1.
    """
    shares = torch.full_like(fractions[..., 1:], MARK_PRESENCE_SHARE)
    shares[..., : len(OBJECT_CLASSES)] = object_share
    things = (fractions[..., 1:] / shares).clamp(max=1.0)
    things = things / things.sum(-1, keepdim=True).clamp(min=1.0)
    return torch.cat([1.0 - things.sum(-1, keepdim=True), things], dim=-1)


def alignment_loss(
    projected: torch.Tensor, fractions: torch.Tensor, class_words, embeddings: torch.Tensor, object_share: float
):
    """Mean squared distance of each projected patch to its word target (the class words'
    embeddings weighted by :func:`presence_weights`), in units of the mean squared norm of a
    word embedding.

    Args:
        projected: ``[B, grid * grid, D]`` projector outputs.
        fractions: ``[B, grid * grid, NUM_CLASSES]`` class shares per patch.
        class_words: per sample, per class, the token ids whose embeddings sum to its word.
        embeddings: ``[vocab, D]`` input word embeddings (detached here).
        object_share: see :func:`presence_weights`.
    """
    table = embeddings.detach()
    words = torch.stack(
        [torch.stack([table[ids].sum(0) for ids in sample]) for sample in class_words]
    )  # [B, NUM_CLASSES, D]
    weights = presence_weights(fractions, object_share)
    target = weights @ words
    # Patches that show something weigh OBJECT_PATCH_WEIGHT times a background patch: in the
    # whole-image view a handful of 256 patches hold an object, and they are what FOCUS's map
    # must find.
    patch_weight = 1.0 + (OBJECT_PATCH_WEIGHT - 1.0) * (1.0 - weights[..., 0])
    error = ((projected - target) ** 2).sum(-1)
    return (patch_weight * error).sum() / patch_weight.sum() / (table**2).sum(-1).mean()


class ProjectorTap:
    """Keeps the multimodal projector's last output ``[n_images, grid * grid, D]``."""

    def __init__(self, model):
        self.output = None
        model.model.multi_modal_projector.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self.output = output


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    return peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def train(args) -> dict:
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, processor = build_tiny_focus_llava(seed=args.seed)
    if args.init is not None:
        model, processor = load_tiny_focus_llava(args.init)
        print(f"initialised from {args.init}")
    if args.image_size is not None and args.image_size != model.config.vision_config.image_size:
        set_image_size(model, processor, args.image_size)
        grid = args.image_size // model.config.vision_config.patch_size
        print(f"vision input: {args.image_size} px ({grid} x {grid} map)")
    model.train()
    adapter = LlavaAdapter(model, processor)
    # The run's FOCUS settings shape its ROI-sized training views and travel with every checkpoint.
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.resume and (args.out / SETTINGS_FILE).is_file()):
        shutil.copyfile(args.focus_config, args.out / SETTINGS_FILE)
    config = tiny_focus_config(path=args.out)
    embeddings = model.get_input_embeddings().weight
    tap = ProjectorTap(model)
    align_params = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    optimizers = {
        "align": torch.optim.AdamW(align_params, lr=args.align_lr, weight_decay=0.01, betas=(0.9, 0.98)),
        "instruct": torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98)),
    }
    state_path = args.out / "state.pt"
    step, next_scene, log = 0, 0, {"loss": [], "align": []}
    if args.resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        step, next_scene, log = state["step"], state["next_scene"], state["log"]
        print(f"resumed at step {step}, scene {next_scene}")
    total = args.align_steps + args.steps
    start, out_of_time = time.time(), False
    bar = tqdm(total=total, initial=step, desc="train", unit="step")
    while step < total:
        stage = "align" if step < args.align_steps else "instruct"
        loader = torch.utils.data.DataLoader(
            SampleStream(adapter, config, args.seed, next_scene, stage),
            batch_size=None,
            num_workers=args.workers,
            prefetch_factor=32 if args.workers else None,
        )
        size = args.align_batch_size if stage == "align" else args.batch_size
        for batch in batches(iter(loader), size, adapter.pad_token_id):
            if stage == "align":
                model.model.get_image_features(pixel_values=batch["pixel_values"])
                loss = align = alignment_loss(
                    tap.output, batch["fractions"], batch["class_words"], embeddings, args.object_presence
                )
                optimizer, lr = optimizers["align"], lr_at(step, args.align_steps, args.align_lr, 20)
            else:
                inputs = {k: batch[k] for k in ("input_ids", "labels", "attention_mask", "pixel_values") if k in batch}
                loss = model(**inputs, use_cache=False).loss
                align = None
                if "pixel_values" in batch:
                    align = alignment_loss(
                        tap.output, batch["fractions"], batch["class_words"], embeddings, args.object_presence
                    )
                    loss = loss + args.align_weight * align
                s = step - args.align_steps
                optimizer, lr = optimizers["instruct"], lr_at(s, args.steps, args.lr, max(1, args.steps // 20))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            log["loss"].append(round(loss.item(), 4))
            if align is not None:
                log["align"].append(round(align.item(), 4))
            step += 1
            next_scene = batch["scene"] + 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(
                    stage=stage,
                    loss=f"{np.mean(log['loss'][-50:]):.3f}",
                    align=f"{np.mean(log['align'][-50:]):.3f}" if log["align"] else "-",
                )
            out_of_time = args.minutes is not None and time.time() - start > args.minutes * 60
            if step % args.save_every == 0 or step == total or step == args.align_steps or out_of_time:
                save(model, processor, args.out / f"step_{step}", args.out / SETTINGS_FILE)
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                        "step": step,
                        "next_scene": next_scene,
                        "log": log,
                    },
                    state_path,
                )
            if step == args.align_steps or step >= total or out_of_time:
                break
        if out_of_time:
            break
    bar.close()
    save(model, processor, args.out, args.out / SETTINGS_FILE)
    summary = {
        "steps": step,
        "align_steps": args.align_steps,
        "instruct_steps": args.steps,
        "batch_size": args.batch_size,
        "align_batch_size": args.align_batch_size,
        "lr": args.lr,
        "align_lr": args.align_lr,
        "align_weight": args.align_weight,
        "object_presence": args.object_presence,
        "seed": args.seed,
        "threads": args.threads,
        "scenes": next_scene,
        "minutes_this_run": round((time.time() - start) / 60, 2),
        "loss_last_50": float(np.mean(log["loss"][-50:])),
        "align_last_50": float(np.mean(log["align"][-50:])),
        "torch": torch.__version__,
    }
    (args.out / "training_log.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def save(model, processor, folder: Path, settings: Path) -> None:
    """Write the model (safetensors), processor and FOCUS settings file for ``from_pretrained``
    (transformers 4.46+) and ``focus`` commands."""
    folder.mkdir(parents=True, exist_ok=True)
    if settings.parent != folder:
        shutil.copyfile(settings, folder / SETTINGS_FILE)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    make_checkpoint_portable(folder)
    model.train()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, state.pt)")
    parser.add_argument("--align-steps", type=int, default=600, help="dense alignment steps (tower + projector)")
    parser.add_argument("--steps", type=int, default=4000, help="instruction steps (sets the LR schedule)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--align-batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--align-lr", type=float, default=2e-3)
    parser.add_argument("--align-weight", type=float, default=1.0, help="alignment loss weight in stage 2")
    parser.add_argument(
        "--object-presence",
        type=float,
        default=0.02,
        help="share of a patch from which an object is the patch's word in the alignment targets (runs A-F: 0.1)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="vision input side in pixels (default: the model's own; 96 -> 16 x 16 map, 144 -> 24 x 24); "
        "an --init checkpoint of another size gets its position embeddings resized",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--workers", type=int, default=1, help="data workers (scene rendering)")
    parser.add_argument("--save-every", type=int, default=250, help="save step_N/ and state.pt every N steps")
    parser.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this wall time")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    parser.add_argument(
        "--focus-config",
        type=Path,
        default=SHIPPED_CHECKPOINT / SETTINGS_FILE,
        help=f"the run's FOCUS settings ({SETTINGS_FILE}: layers, ROI sides), copied into every "
        "checkpoint; default: the shipped checkpoint's",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this checkpoint's weights (a step_N/ folder of an earlier run; same "
        "vocabulary), with fresh optimisers and schedules",
    )
    args = parser.parse_args(argv)
    print(json.dumps(train(args)))


if __name__ == "__main__":
    main()
