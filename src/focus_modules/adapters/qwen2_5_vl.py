"""Adapter for Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``).

Qwen2.5-VL sees the image at (close to) its native resolution: ``smart_resize`` scales it to
``H' x W'``, both multiples of ``patch_size * spatial_merge_size`` (14 * 2 = 28), with
``min_pixels <= H' * W' <= max_pixels`` and the aspect ratio kept as well as possible. The
vision tower encodes ``(H'/14) x (W'/14)`` patches (``image_grid_thw = [1, H'/14, W'/14]``),
merges every 2 x 2 block into one token, and undoes its window ordering before the language
model, so the image block is ``(H'/28) x (W'/28)`` tokens, row-major over the whole resized
image. The relevance map is that grid; a cell is ``W/(W'/28) x H/(H'/28)`` pixels of the
original image (a per-axis stretch, no padding).

The adapter resizes the image itself (the processor's bicubic ``smart_resize``, then
``do_resize=False``), so ``max_pixels`` (and ``min_pixels``) are the adapter's own options and
behave the same on every transformers version; by default they are the processor's.

Layer preset: ``FocusConfig.preset("qwen2.5-vl")`` reads layers ``(14, 28)``, the last 50 % of
Qwen2.5-VL-7B's 28 layers, inside the paper's "last 25-60 %" advice (A.3). For other depths
(3B: 36, 72B: 80) the adapter's ``default_config`` takes the last 50 % of the model's own layers.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from focus_modules.adapters.base import Batch
from focus_modules.adapters.multi_image import LocalGrid, MultiImageAdapter
from focus_modules.ops.boxes import CellGeometry


class Qwen2_5_VLAdapter(MultiImageAdapter):
    """Qwen2.5-VL: map over all image tokens on the ``(H'/28) x (W'/28)`` merged grid.

    Args:
        model, processor: as :class:`~focus_modules.adapters.ModelAdapter`.
        max_pixels: largest ``H' * W'`` of the resized image (``None``: the processor's).
        min_pixels: smallest ``H' * W'`` (``None``: the processor's).
    """

    family = "qwen2.5-vl"
    model_classes = ("Qwen2_5_VLForConditionalGeneration",)
    preset_depth = 28  # Qwen2.5-VL-7B: layers (14, 28) are its last 50 %
    max_aspect_ratio = 199  # the image processor refuses aspect ratios of 200 and more

    def __init__(self, model, processor, max_pixels: int | None = None, min_pixels: int | None = None) -> None:
        super().__init__(model, processor)
        vision = model.config.vision_config
        self.patch_size = int(vision.patch_size)
        self.merge_size = int(vision.spatial_merge_size)
        self.factor = self.patch_size * self.merge_size
        size = dict(getattr(self.image_processor, "size", None) or {})
        self.min_pixels = int(
            min_pixels
            or getattr(self.image_processor, "min_pixels", None)
            or size.get("shortest_edge")
            or size["min_pixels"]
        )
        self.max_pixels = int(
            max_pixels
            or getattr(self.image_processor, "max_pixels", None)
            or size.get("longest_edge")
            or size["max_pixels"]
        )
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(W', H')`` of the model's view (the processor's ``smart_resize``)."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        new_h, new_w = smart_resize(
            height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )
        return new_w, new_h

    def prepare_image(self, image: Image.Image) -> Image.Image:
        size = self.resized_size(*image.size)
        return image if size == image.size else image.resize(size, Image.BICUBIC)

    def processor_kwargs(self) -> dict:
        return {"do_resize": False}

    def suffix_position_ids(self, prefix: Batch, rows: Tensor, length: int) -> Tensor:
        """M-RoPE positions ``[3, len(rows), length]`` of text that continues an existence
        prompt's prefix (one image each). The model numbers a prompt's real tokens from 0 and an
        image block of ``t x h x w`` merged tokens advances the position by ``max(t, h, w)``
        while it takes ``t * h * w`` tokens, so the next text position is the prefix's real
        length plus ``max(t, h, w) - t * h * w``; text positions are equal on all three axes."""
        mask = prefix.inputs["attention_mask"]
        thw = prefix.inputs["image_grid_thw"].to(mask.device)
        if thw.shape[0] != mask.shape[0]:
            raise ValueError(f"expected one image per prefix, got {thw.shape[0]} images for {mask.shape[0]} prompts")
        merged = thw // torch.tensor([1, self.merge_size, self.merge_size], device=thw.device)
        delta = merged.amax(-1) - merged.prod(-1)
        start = mask.sum(-1) + delta
        positions = start[rows, None] + torch.arange(length, device=mask.device)
        return positions[None].expand(3, -1, -1)

    def local_grid(self, image: Image.Image, model_inputs: dict[str, Tensor]) -> LocalGrid:
        width, height = image.size
        if width % self.factor or height % self.factor:
            raise ValueError(f"the model's view {width}x{height} is not a multiple of {self.factor} pixels")
        h, w = height // self.factor, width // self.factor
        thw = model_inputs["image_grid_thw"].flatten().tolist()
        if thw != [1, h * self.merge_size, w * self.merge_size]:
            raise ValueError(f"image_grid_thw {thw} does not match the {width}x{height} view")
        size = torch.tensor([width, height], dtype=torch.float64)
        geometry = CellGeometry(torch.zeros(2, dtype=torch.float64), size / torch.tensor([w, h]), size)
        return LocalGrid(torch.arange(h * w), (h, w), geometry, h * w)
