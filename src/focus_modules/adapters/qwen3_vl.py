"""Adapter for Qwen3-VL (``Qwen3VLForConditionalGeneration``).

Qwen3-VL keeps Qwen2.5-VL's image layout with its own patch size, so the adapter is
:class:`~focus_modules.adapters.Qwen2_5_VLAdapter` with another family and depth. What the
transformers sources say (``models/qwen3_vl``, checked on 5.24):

- The processor is ``Qwen2VLImageProcessor`` with ``patch_size = 16`` and ``merge_size = 2``:
  ``smart_resize`` to multiples of 32 pixels, ``image_grid_thw = [1, H'/16, W'/16]``, and
  ``Qwen3VLProcessor.replace_image_token`` expands one ``<|image_pad|>`` into
  ``(H'/32) x (W'/32)`` tokens between ``<|vision_start|>`` and ``<|vision_end|>``.
- The vision tower has no window attention (Qwen2.5-VL's reordering is gone); the processor
  already orders the patches in 2 x 2 groups and the merger concatenates each group, so the
  image block is the merged grid, row-major over the whole resized image.
- Deepstack: features of a few vision layers, merged in the same 2 x 2 groups, are ADDED to the
  hidden states of the image tokens after the first decoder layers
  (``Qwen3VLTextModel._deepstack_process`` with ``visual_pos_masks = input_ids == image_token_id``).
  They change what those tokens hold, not where they sit or how many there are.
- Timestamps (``<t seconds>``) are inserted for video frames only; images get none.

So the relevance map is the ``(H'/32) x (W'/32)`` grid of all image tokens, and a cell is
``W/(W'/32) x H/(H'/32)`` pixels of the original image.

Layer preset: ``FocusConfig.preset("qwen3-vl")`` reads layers ``(18, 36)``, the last 50 % of
Qwen3-VL-8B's (and 4B's) 36 layers, as for Qwen2.5-VL; other depths (2B: 28, 32B: 64) get the
same share of their own layers.
"""

from __future__ import annotations

from focus_modules.adapters.qwen2_5_vl import Qwen2_5_VLAdapter


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    """Qwen3-VL: map over all image tokens on the ``(H'/32) x (W'/32)`` merged grid.

    Args:
        model, processor: as :class:`~focus_modules.adapters.ModelAdapter`.
        max_pixels: largest ``H' * W'`` of the resized image (``None``: the processor's).
        min_pixels: smallest ``H' * W'`` (``None``: the processor's).
    """

    family = "qwen3-vl"
    model_classes = ("Qwen3VLForConditionalGeneration",)
    preset_depth = 36  # Qwen3-VL-8B: layers (18, 36) are its last 50 %
