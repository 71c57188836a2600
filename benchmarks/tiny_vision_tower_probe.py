"""Can the tiny model's vision tower, on its own, learn to tell the shapes apart? A diagnostic
for whoever trains the next tiny checkpoint (not part of its training).

    python benchmarks/tiny_vision_tower_probe.py [--pool mean|attention|max] [--steps 600]

It takes the untrained tower of ``build_tiny_focus_llava()`` (same config, same initial
weights; ``--vision-hidden`` / ``--vision-layers`` change its size) and trains it, with a small
head on the patch features the LLaVA projector would read (``vision_feature_layer``, CLS
dropped), to classify the shape and the colour of the object in two crops of every object:
the first stage's object-centred crop (side / object side in ``synthetic.train.OBJECT_CONTEXT``
or ``--context``) and an ROI-sized crop (``synthetic.train.roi_box``), pixels made by the LLaVA
adapter exactly as in training. It trains on both kinds from scenes of the training tag and
reports each kind's accuracy on validation scenes ``(9501, 0, i)``. The pooling of the patch
features stands in for how the language model reads them: ``mean``, one learned ``attention``
query, or ``max``. It prints the validation accuracies every 100 steps.

This loss is a classification loss on the tower alone; the shipped model never sees it.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from focus_modules.adapters import LlavaAdapter
from focus_modules.synthetic import train as training
from focus_modules.synthetic.crops import context_crop_box
from focus_modules.synthetic.heldout import VALIDATION_SEED_TAG
from focus_modules.synthetic.scene import make_scene, scene_rng
from focus_modules.synthetic.shapes import COLORS, SHAPES
from focus_modules.synthetic.tiny_llava import build_tiny_focus_llava


def crops(adapter: LlavaAdapter, tag: int, scenes: int, context: tuple[float, float]) -> dict[str, torch.Tensor]:
    """An object-centred crop (side / object side in ``context``) and an ROI-sized crop per
    object of scenes ``(tag, 0, i)``: pixels ``(N, 3, H, W)``, ``shape`` / ``color`` indices
    ``(N,)`` and ``roi`` flags ``(N,)``."""
    pixels, shapes, colors, roi = [], [], [], []
    for i in range(scenes):
        scene = make_scene((tag, 0, i))
        rng = scene_rng((tag + 1, 0, i))
        for obj in scene.objects:
            boxes = (context_crop_box([obj.box], scene.size, rng, context=context, min_side=8),
                     training.roi_box(obj.box, scene, rng))
            for is_roi, box in enumerate(boxes):
                square, _ = adapter.prepare_image(scene.crop(box))
                pixels.append(adapter.pixel_values([square])[0])
                shapes.append(SHAPES.index(obj.shape))
                colors.append(list(COLORS).index(obj.color))
                roi.append(bool(is_roi))
    return {"pixels": torch.stack(pixels), "shape": torch.tensor(shapes), "color": torch.tensor(colors),
            "roi": torch.tensor(roi)}


class TowerClassifier(nn.Module):
    """The tower, a pooling of its patch features and a shape + colour head."""

    def __init__(self, tower: nn.Module, feature_layer: int, pool: str):
        super().__init__()
        hidden = tower.config.hidden_size
        self.tower, self.feature_layer, self.pool = tower, feature_layer, pool
        self.query = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.attention = nn.MultiheadAttention(hidden, 4, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, 128), nn.GELU(), nn.Linear(128, len(SHAPES) + len(COLORS)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> logits ``(B, len(SHAPES) + len(COLORS))``."""
        patches = self.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[self.feature_layer][:, 1:]
        if self.pool == "mean":
            pooled = patches.mean(1)
        elif self.pool == "max":
            pooled = patches.max(1).values
        else:
            pooled = self.attention(self.query.expand(len(patches), -1, -1), patches, patches)[0][:, 0]
        return self.head(pooled)


def accuracies(classifier: TowerClassifier, data: dict[str, torch.Tensor]) -> dict[str, float]:
    classifier.eval()
    with torch.no_grad():
        logits = torch.cat([classifier(data["pixels"][i:i + 128]) for i in range(0, len(data["pixels"]), 128)])
    classifier.train()
    result = {}
    for name, rows in (("object_crop", ~data["roi"]), ("roi_crop", data["roi"])):
        shape_hit = logits[rows, :len(SHAPES)].argmax(1) == data["shape"][rows]
        color_hit = logits[rows, len(SHAPES):].argmax(1) == data["color"][rows]
        result[f"{name}_shape"] = round(shape_hit.float().mean().item(), 3)
        result[f"{name}_colour"] = round(color_hit.float().mean().item(), 3)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=("mean", "attention", "max"), default="mean")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--context", type=float, nargs=2, default=training.OBJECT_CONTEXT,
                        help="object-centred crop side / object side, smallest and largest")
    parser.add_argument("--vision-hidden", type=int, default=None, help="tower width (default: the shipped model's)")
    parser.add_argument("--vision-layers", type=int, default=None, help="tower depth (default: the shipped model's)")
    parser.add_argument("--train-scenes", type=int, default=300)
    parser.add_argument("--val-scenes", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tower_size = {k: v for k, v in (("vision_hidden", args.vision_hidden), ("vision_layers", args.vision_layers))
                  if v is not None}
    model, processor = build_tiny_focus_llava(seed=0, **tower_size)
    adapter = LlavaAdapter(model, processor)
    train_data = crops(adapter, training.TRAIN_SEED_TAG, args.train_scenes, tuple(args.context))
    val_data = crops(adapter, VALIDATION_SEED_TAG, args.val_scenes, tuple(args.context))
    tower = model.model.vision_tower if hasattr(model, "model") else model.vision_tower  # transformers 5.x / 4.x
    print(json.dumps({"train_crops": len(train_data["pixels"]), "validation_crops": len(val_data["pixels"])}))
    classifier = TowerClassifier(tower, model.config.vision_feature_layer, args.pool)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    order = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(1, args.steps + 1):
        rows = torch.randint(len(train_data["pixels"]), (args.batch_size,), generator=order)
        logits = classifier(train_data["pixels"][rows])
        loss = (nn.functional.cross_entropy(logits[:, :len(SHAPES)], train_data["shape"][rows])
                + nn.functional.cross_entropy(logits[:, len(SHAPES):], train_data["color"][rows]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(classifier.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == args.steps:
            report = {"step": step, "seconds": round(time.time() - start)} | accuracies(classifier, val_data)
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
