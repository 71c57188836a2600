"""Adapter for LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``, llava-hf layout).

OneVision sees a global view plus "any-resolution" local tiles. Its processor picks the best
pinpoint resolution ``(H*, W*)`` from ``image_grid_pinpoints`` (``select_best_resolution``),
resizes the image into it keeping the aspect ratio, pads it symmetrically, and cuts it into
``tiles_h x tiles_w`` tiles of the vision tower's ``image_size``; every tile (and the resized
global view) gives ``a x a`` tokens (``a = image_size // patch_size``; 27 for SigLIP-384/14).
The model then lays out one image's block as (``pack_image_features``):

1. the ``a * a`` global-view tokens;
2. the local tokens as ONE map of ``(tiles_h * a) x (tiles_w * a)`` cells running across
   tiles, with the rows/columns that show only the padding removed (``unpad_image``: ``p``
   from each side, ``p = (size - round(image side * scale)) // 2``) and, when
   ``r = sqrt(h * w / (max_tiles * a^2)) > 1.1`` (``vision_aspect_ratio = "anyres_max_<max_tiles>"``),
   shrunk bilinearly to ``(h // r) x (w // r)``;
3. one ``image_newline`` token after every row of that map.

The relevance map (Eq. 4) uses the local tokens only: the ``h x w`` map with the newline
column dropped. A map cell maps back to pixels through the shrink, the unpadding, the padding
of the pinpoint canvas and the resize. The final answer is a multi-image prompt (A.5); there the
processor encodes every image as one padded-square global view (its multi-image mode).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from focus_modules.adapters.base import Batch, Encoding, patch_grid_size
from focus_modules.adapters.multi_image import LocalGrid, MultiImageAdapter
from focus_modules.ops.boxes import CellGeometry

# The model shrinks the local map when its token count exceeds max_tiles tiles' worth by this
# factor (LlavaOnevisionModel.pack_image_features).
SHRINK_RATIO = 1.1


class LlavaOnevisionAdapter(MultiImageAdapter):
    """LLaVA-OneVision: map over the unpadded local any-resolution grid, layers (21, 28)."""

    family = "llava-onevision"
    model_classes = ("LlavaOnevisionForConditionalGeneration",)
    preset_depth = 28  # Table 7's (21, 28) is for OneVision-7B (Qwen2-7B, 28 layers): its last 25 %

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        config = model.config
        vision = config.vision_config
        self.tokens_per_side = patch_grid_size(vision)
        if getattr(config, "vision_feature_select_strategy", "full") != "full":
            raise ValueError(
                "the LLaVA-OneVision adapter expects vision_feature_select_strategy='full' (SigLIP has no CLS)"
            )
        self.tile_size = vision.image_size
        self.pinpoints = [tuple(p) for p in config.image_grid_pinpoints]
        aspect = getattr(config, "vision_aspect_ratio", "anyres_max_9")
        if not aspect.startswith("anyres_max_"):
            raise ValueError(f"unsupported vision_aspect_ratio {aspect!r} (expected 'anyres_max_<n>')")
        self.max_tiles = int(aspect[len("anyres_max_") :])
        # The unpadded local grid of a more elongated image can lose every row (or column) of
        # its short side; half a tile's tokens keeps at least two on one tile.
        self.max_aspect_ratio = self.tokens_per_side / 2

    def local_grid(self, image: Image.Image, model_inputs: dict[str, Tensor]) -> LocalGrid:
        from transformers.image_processing_utils import select_best_resolution

        width, height = image.size
        a, tile = self.tokens_per_side, self.tile_size
        best_h, best_w = select_best_resolution((height, width), self.pinpoints)
        tiles = model_inputs["pixel_values"].shape[1]  # zero tiles pad a batch, not one image
        expected_tiles = (best_h // tile) * (best_w // tile) + 1
        if model_inputs["image_sizes"][0].tolist() != [height, width] or tiles != expected_tiles:
            raise ValueError(
                f"the processor's view of a {width}x{height} image ({tiles} tiles, image_sizes "
                f"{model_inputs['image_sizes'][0].tolist()}) is not the pinpoint {best_w}x{best_h} + global view"
            )
        rows, cols = best_h // tile * a, best_w // tile * a  # the local map before unpadding
        # unpad_image: remove the rows (or columns) that show only the canvas' padding
        if width / height > cols / rows:
            pad = (rows - int(round(height * (cols / width), 7))) // 2
            top, left, rows = pad, 0, rows - 2 * pad
        else:
            pad = (cols - int(round(width * (rows / height), 7))) // 2
            top, left, cols = 0, pad, cols - 2 * pad
        ratio = math.sqrt(rows * cols / (self.max_tiles * a * a))
        h, w = (int(rows // ratio), int(cols // ratio)) if ratio > SHRINK_RATIO else (rows, cols)
        # pixels of the pinpoint canvas: the image is resized to (new_w, new_h) keeping its
        # aspect ratio (get_patch_output_size) and pasted in the middle
        if best_w / width < best_h / height:
            new_w, new_h = best_w, min(math.ceil(height * best_w / width), best_h)
        else:
            new_w, new_h = min(math.ceil(width * best_h / height), best_w), best_h
        paste_x, paste_y = (best_w - new_w) // 2, (best_h - new_h) // 2
        canvas_cell = tile / a  # canvas pixels per cell of the local map
        to_image = torch.tensor([width / new_w, height / new_h], dtype=torch.float64)
        origin = (
            torch.tensor([left * canvas_cell - paste_x, top * canvas_cell - paste_y], dtype=torch.float64) * to_image
        )
        cell = torch.tensor([cols / w, rows / h], dtype=torch.float64) * canvas_cell * to_image
        geometry = CellGeometry(origin, cell, torch.tensor([width, height], dtype=torch.float64))
        # block = a*a global tokens, then h rows of w local tokens + 1 newline token
        offsets = a * a + (torch.arange(h)[:, None] * (w + 1) + torch.arange(w)[None, :]).flatten()
        return LocalGrid(offsets, (h, w), geometry, a * a + h * (w + 1))

    def collate(self, encodings: Sequence[Encoding]) -> Batch:
        """As the base class, after zero-padding ``pixel_values`` ``[images, tiles, 3, s, s]``
        to the batch's largest tile count (the model reads each image's own tiles only)."""
        key = "pixel_values"
        if encodings and key in encodings[0].model_inputs:
            tiles = max(e.model_inputs[key].shape[1] for e in encodings)
            padded = []
            for enc in encodings:
                pixels = enc.model_inputs[key]
                extra = pixels.new_zeros((pixels.shape[0], tiles - pixels.shape[1], *pixels.shape[2:]))
                padded.append(
                    dataclasses.replace(enc, model_inputs={**enc.model_inputs, key: torch.cat([pixels, extra], 1)})
                )
            encodings = padded
        return super().collate(encodings)
