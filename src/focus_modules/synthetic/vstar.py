"""Write synthetic questions in the V*Bench folder layout (docs/design.md §11).

::

    ROOT/
      direct_attributes/  NAME.jpg + NAME.json   attribute questions
      relative_position/  NAME.jpg + NAME.json   spatial (left/right) questions
      counting/           NAME.jpg + NAME.json   counting (type-2) questions — not in V*Bench

Each JSON has V*Bench's keys ``target_object`` (list of phrases), ``bbox`` (one ``[x, y, w, h]``
per target instance), ``question`` and ``options`` (the first is correct), plus ``family``,
``seed`` (``make_scene(tuple(seed), config)`` redraws the image), ``question_type``,
``bbox_target`` (index in ``target_object`` of each box), ``image_size`` (``[w, h]``) and
``objects`` (every shape in the image with its colour, mark colour and ``[x, y, w, h]`` box).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .records import QUESTION_FAMILIES, SceneQuestion, xyxy_to_xywh
from .scene import Scene, SceneConfig, make_scene

FAMILY_DIRS = {"attribute": "direct_attributes", "spatial": "relative_position", "counting": "counting"}
JPEG_QUALITY = 95


def jpeg_round_trip(image: Image.Image, quality: int = JPEG_QUALITY) -> Image.Image:
    """``image`` as :func:`write_vstar_layout` stores it and a reader decodes it (RGB)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def vstar_record(scene: Scene, question: SceneQuestion) -> dict:
    """The V*Bench JSON record of one question on a scene (with this package's extra keys)."""
    return {
        "target_object": list(question.target_object),
        "bbox": [xyxy_to_xywh(b) for b in question.boxes],
        "question": question.question,
        "options": list(question.options),
        "family": question.family,
        "seed": [int(s) for s in np.atleast_1d(scene.seed)],
        "question_type": question.question_type,
        "bbox_target": list(question.box_target),
        "image_size": list(scene.size),
        "objects": [
            {"shape": o.shape, "color": o.color, "mark": o.mark, "bbox": xyxy_to_xywh(o.box)} for o in scene.objects
        ],
    }


def write_vstar_layout(
    root: str | Path,
    n_per_family: int,
    seed: int = 0,
    config: SceneConfig | None = None,
    families: tuple[str, ...] = QUESTION_FAMILIES,
    jpeg_quality: int = JPEG_QUALITY,
    progress: bool = True,
) -> list[Path]:
    """Generate ``n_per_family`` questions of each family, one scene per question, and write them.

    Question ``i`` of family ``f`` is asked on ``make_scene((seed, QUESTION_FAMILIES.index(f), i), config)``
    (its first question of that family, a random pick), so sets written with different ``seed``
    share no scene, and none shares a scene with ``make_scene(int)`` used elsewhere.

    Args:
        root: output folder (created; existing files with the same names are overwritten).
        n_per_family: questions per family.
        seed: dataset seed (non-negative).
        config: scene parameters; ``SceneConfig()`` by default.
        families: which families to write.
        jpeg_quality: JPEG quality of the images.
        progress: show a tqdm progress bar.

    Returns:
        Paths of the written JSON files, family by family.
    """
    unknown = [f for f in families if f not in QUESTION_FAMILIES]
    if unknown or n_per_family < 0 or seed < 0:
        raise ValueError(
            f"need families in {QUESTION_FAMILIES}, n_per_family >= 0 and seed >= 0; "
            f"got {families}, {n_per_family}, {seed}"
        )
    root = Path(root)
    written = []
    with tqdm(total=n_per_family * len(families), desc="synthetic V*Bench", disable=not progress) as bar:
        for family in families:
            folder = root / FAMILY_DIRS[family]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_family):
                scene = make_scene((seed, QUESTION_FAMILIES.index(family), i), config)
                name = f"synth_{family}_{seed}_{i:05d}"
                scene.image.save(folder / f"{name}.jpg", quality=jpeg_quality)
                path = folder / f"{name}.json"
                path.write_text(json.dumps(vstar_record(scene, scene.questions_of(family)[0]), indent=1))
                written.append(path)
                bar.update()
    return written
