"""Adapter for InternVL (``InternVLForConditionalGeneration``, the ``OpenGVLab/InternVL3-*-hf`` layout).

What the transformers sources say (``models/internvl`` and the ``GotOcr2ImageProcessor`` it
uses, checked on 5.24):

- Dynamic tiles (``crop_to_patches=True``, the processor's default): ``get_optimal_tiled_canvas``
  picks ``cols x rows`` tiles (``min_patches <= cols * rows <= max_patches``) whose aspect
  ratio is closest to the image's; the image is STRETCHED to ``(cols * s) x (rows * s)`` pixels
  (``s`` = the tower's ``image_size``, 448) and cut into tiles, row-major; when there is more
  than one tile, the whole image resized to ``s x s`` is appended as a thumbnail, LAST. The
  canvas follows the aspect ratio only: a small image is upscaled onto as many tiles as a
  large one of the same shape.
- Each tile gives ``(s / patch)^2`` patch features (the CLS token is dropped,
  ``vision_feature_select_strategy="default"``); ``pixel_shuffle`` with ``downsample_ratio``
  0.5 folds every 2 x 2 block into one token, so a tile is an ``a x a`` block of tokens,
  row-major (``a = s / patch / 2``: 16 for 448 / 14).
- ``InternVLProcessor.replace_image_token`` expands the ``<IMG_CONTEXT>`` placeholder into
  ``<img>``, ``a * a * views`` context tokens and ``</img>``: the tiles' blocks in tile order,
  then the thumbnail's.

The relevance map is the tiles arranged as the image: ``(rows * a) x (cols * a)`` cells, the
thumbnail excluded (it repeats the image at a lower resolution; a single-tile image has no
thumbnail). Since the canvas is a stretch of the whole image, a cell is
``W / (cols * a) x H / (rows * a)`` pixels of the original image, with no padding.

Layer preset: ``FocusConfig.preset("internvl")`` reads layers ``(14, 28)``, the last 50 % of
InternVL3-8B's 28 layers (Qwen2.5-7B); other depths get the same share of their own layers.
Proposal settings as LLaVA-OneVision's (tiles of a high-resolution view).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from focus_modules.adapters.multi_image import LocalGrid, MultiImageAdapter
from focus_modules.ops.boxes import CellGeometry


class InternVLAdapter(MultiImageAdapter):
    """InternVL: map over the tiles' tokens arranged as the image, thumbnail excluded.

    Args:
        model, processor: as :class:`~focus_modules.adapters.ModelAdapter`.
        max_patches: most tiles per image (``None``: the image processor's, 12 for InternVL3).
    """

    family = "internvl"
    model_classes = ("InternVLForConditionalGeneration",)
    preset_depth = 28  # InternVL3-8B: layers (14, 28) are its last 50 %

    def __init__(self, model, processor, max_patches: int | None = None) -> None:
        super().__init__(model, processor)
        config = model.config
        vision = config.vision_config
        tile, patch = _side(vision.image_size), _side(vision.patch_size)
        patches_per_side = tile // patch
        tokens_per_side = patches_per_side * config.downsample_ratio
        if tile % patch or tokens_per_side != int(tokens_per_side):
            raise ValueError(f"{tile}-px tiles of {patch}-px patches do not pixel-shuffle by {config.downsample_ratio}")
        self.tile_size = tile
        self.tokens_per_side = int(tokens_per_side)
        self.min_patches = int(self.image_processor.min_patches)
        self.max_patches = int(max_patches or self.image_processor.max_patches)
        if not 1 <= self.min_patches <= self.max_patches:
            raise ValueError(f"need 1 <= min_patches <= max_patches, got {self.min_patches}, {self.max_patches}")

    def processor_kwargs(self) -> dict:
        return {"crop_to_patches": True, "min_patches": self.min_patches, "max_patches": self.max_patches}

    def tiles(self, width: int, height: int) -> tuple[int, int]:
        """``(cols, rows)`` of the tile canvas for a ``width x height`` image (the processor's choice)."""
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

        return get_optimal_tiled_canvas(
            (height, width), (self.tile_size, self.tile_size), self.min_patches, self.max_patches
        )

    def local_grid(self, image: Image.Image, model_inputs: dict[str, Tensor]) -> LocalGrid:
        width, height = image.size
        cols, rows = self.tiles(width, height)
        views = cols * rows + (cols * rows > 1)  # the tiles, then the thumbnail
        if model_inputs["pixel_values"].shape[0] != views:
            raise ValueError(
                f"the processor made {model_inputs['pixel_values'].shape[0]} views of a {width}x{height} "
                f"image, expected {cols}x{rows} tiles" + (" + thumbnail" if views > 1 else "")
            )
        a = self.tokens_per_side
        r, c = torch.arange(rows * a)[:, None], torch.arange(cols * a)[None, :]
        tile = (r // a) * cols + c // a
        offsets = (tile * a * a + (r % a) * a + c % a).flatten()
        size = torch.tensor([width, height], dtype=torch.float64)
        geometry = CellGeometry(torch.zeros(2, dtype=torch.float64), size / torch.tensor([cols * a, rows * a]), size)
        return LocalGrid(offsets, (rows * a, cols * a), geometry, views * a * a)


def _side(value) -> int:
    """One side of a square size given as an int or an ``(h, w)`` pair."""
    if isinstance(value, (list, tuple)):
        if value[0] != value[1]:
            raise ValueError(f"expected a square size, got {tuple(value)}")
        return int(value[0])
    return int(value)
