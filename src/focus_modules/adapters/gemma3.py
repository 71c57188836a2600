"""Adapter for Gemma 3 (``Gemma3ForConditionalGeneration``).

What the transformers sources say (``models/gemma3``, checked on 5.24):

- ``Gemma3ImageProcessor`` STRETCHES every image to the tower's square input (896 px, no
  padding, aspect ratio not kept); SigLIP gives ``(896 / 14)^2 = 64 x 64`` patch features and
  ``Gemma3MultiModalProjector`` average-pools them to ``mm_tokens_per_image = 256`` tokens,
  a ``16 x 16`` grid, row-major.
- The chat template puts ``<start_of_image>`` where the image goes; ``Gemma3Processor``
  replaces it with ``"\\n\\n<start_of_image>" + 256 x <image_soft_token> + "<end_of_image>\\n\\n"``;
  the model scatters the features into the ``<image_soft_token>`` positions
  (``config.image_token_id``) and lets those tokens attend to each other both ways
  (``token_type_ids``).
- Pan-and-scan (``do_pan_and_scan``, off unless asked for) cuts an elongated image into 2-4
  crops along its long side (the last one narrower when the side does not divide evenly), each
  stretched to 896 px like the whole image. The prompt becomes "Here is the original image
  <global view> and here are some crops to help you see better <crop> <crop> ...": the global
  view's block comes first.

The relevance map is the global view's ``16 x 16`` tokens: the one view every prompt has and the
only one that covers the whole image. A cell is ``W / 16 x H / 16`` pixels of the original
image (the stretch, undone). With pan-and-scan on, the crops stay in the prompt as the model
sees them but are not part of the map (their cells would not be of one size).

Layer preset: ``FocusConfig.preset("gemma3")`` reads layers ``(17, 34)``, the last 50 % of
Gemma-3-4B's 34 layers; other depths (12B: 48, 27B: 62) get the same share of their own layers.
Proposal settings as LLaVA-1.5's, the paper's other fixed-size global-view family.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import Tensor

from focus_modules.adapters.multi_image import LocalGrid, MultiImageAdapter
from focus_modules.ops.boxes import CellGeometry


class Gemma3Adapter(MultiImageAdapter):
    """Gemma 3: map over the global view's pooled ``16 x 16`` tokens.

    Args:
        model, processor: as :class:`~focus_modules.adapters.ModelAdapter`.
        pan_and_scan: add the processor's pan-and-scan crops to every prompt (``None``: the
            processor's setting).
    """

    family = "gemma3"
    model_classes = ("Gemma3ForConditionalGeneration",)
    preset_depth = 34  # Gemma-3-4B: layers (17, 34) are its last 50 %

    def __init__(self, model, processor, pan_and_scan: bool | None = None) -> None:
        super().__init__(model, processor)
        tokens = int(model.config.mm_tokens_per_image)
        self.tokens_per_side = math.isqrt(tokens)
        if self.tokens_per_side**2 != tokens:
            raise ValueError(f"mm_tokens_per_image {tokens} is not a square grid")
        self.pan_and_scan = pan_and_scan

    def processor_kwargs(self) -> dict:
        return {} if self.pan_and_scan is None else {"do_pan_and_scan": self.pan_and_scan}

    def local_grid(self, image: Image.Image, model_inputs: dict[str, Tensor]) -> LocalGrid:
        a = self.tokens_per_side
        views = model_inputs["pixel_values"].shape[0]  # the global view, then any pan-and-scan crops
        size = torch.tensor(image.size, dtype=torch.float64)
        geometry = CellGeometry(torch.zeros(2, dtype=torch.float64), size / a, size)
        return LocalGrid(torch.arange(a * a), (a, a), geometry, views * a * a)
