"""Shared base of the adapters for multi-image families whose processor expands the image
placeholders itself (LLaVA-OneVision, Qwen2.5-VL).

Prompts are encoded by the model's own processor (text + images), so the token layout and the
model inputs are exactly those of the installed transformers version; the adapter then finds
the image block (``input_ids == image_token_id``), reads the map's grid off it (subclasses:
:meth:`MultiImageAdapter.local_grid`), and shifts the target tokens, found with the fast
tokenizer's offset mapping on the unexpanded prompt, by the length of the expansion.

The final answer (A.5, global-local models) is a multi-image prompt: the whole image with every
selected ROI outlined, then one crop per ROI, with a short preamble that says so.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from focus_modules.adapters.base import Encoding, FinalView, ModelAdapter, Selection
from focus_modules.adapters.views import Box, crop, draw_boxes, merge_overlapping
from focus_modules.config import FocusConfig
from focus_modules.ops.boxes import CellGeometry, image_cell_mask

# Outline of the ROIs on the global view of the final prompt.
ROI_OUTLINE = (255, 0, 0)


def multi_image_preamble(num_crops: int) -> str:
    """The sentence in front of the question of a multi-image final prompt."""
    if num_crops == 1:
        crops = "the second image is a close-up crop of that region."
    else:
        crops = f"the next {num_crops} images are close-up crops of those regions, in the same order."
    return f"The first image is the whole image with the regions of interest outlined in red; {crops}"


def outline_width(image: Image.Image) -> int:
    """Line width (pixels) of the ROI outlines on the global view of a final prompt."""
    return max(2, round(max(image.size) / 300))


@dataclass(frozen=True)
class LocalGrid:
    """Where the map's tokens sit inside one image's token block and where its cells lie.

    Attributes:
        offsets: ``[h * w]`` positions inside the image's block of image tokens, row-major.
        grid_hw: ``(h, w)`` of the map.
        geometry: the cells in pixels of the ORIGINAL image (fields of shape ``[2]``).
        num_tokens: the block's length the model will produce; checked against the prompt.
    """

    offsets: Tensor
    grid_hw: tuple[int, int]
    geometry: CellGeometry
    num_tokens: int


class MultiImageAdapter(ModelAdapter):
    """Base of processor-driven, multi-image adapters; subclasses implement
    :meth:`local_grid` (and :meth:`prepare_image` / :meth:`processor_kwargs` when needed)."""

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        config = model.config
        self.image_token_id = int(getattr(config, "image_token_id", None) or config.image_token_index)
        self.image_processor = processor.image_processor

    # --- images --------------------------------------------------------------------------------

    def prepare_image(self, image: Image.Image) -> Image.Image:
        """The image handed to the processor (as it is, by default)."""
        return image

    def processor_kwargs(self) -> dict:
        """Extra keyword arguments of every processor call."""
        return {}

    @abstractmethod
    def local_grid(self, image: Image.Image, model_inputs: dict[str, Tensor]) -> LocalGrid:
        """The map's grid for ``image`` (as given to the processor), from the model's config and
        the processor's outputs for this one image."""

    # --- prompts -------------------------------------------------------------------------------

    def answer_prompt(self, question: str, options: Sequence[str] | None, num_images: int = 1) -> str:
        text = super().answer_prompt(question, options, num_images)
        return text if num_images == 1 else f"{multi_image_preamble(num_images - 1)}\n{text}"

    def final_view(self, image: Image.Image, selection: Selection, config: FocusConfig) -> FinalView:
        """A.5 for global-local models: the whole image with every selected ROI outlined, then
        one crop per ROI (type 1: each target's best ROI; type 2: the ROIs above ``t_type2``,
        overlapping ones merged). No selected ROI: the whole image alone."""
        chosen = [box for boxes in selection.boxes for box in boxes]
        if not chosen:
            return FinalView([image], "image", [])
        if selection.question_type == 2:
            chosen = merge_overlapping(chosen)
        views = [draw_boxes(image, chosen, ROI_OUTLINE, outline_width(image))]
        views += [crop(image, box) for box in chosen]
        return FinalView(views, "multi-image", chosen)

    def image_and_crop_view(self, image: Image.Image, box: Box, kind: str) -> FinalView:
        """The whole image with ``box`` outlined, then its crop: the layout the final prompt's
        preamble announces (:func:`multi_image_preamble`)."""
        return FinalView([draw_boxes(image, [box], ROI_OUTLINE, outline_width(image)), crop(image, box)], kind, [box])

    # --- encoding ------------------------------------------------------------------------------

    def _encode(self, text: str, images: Sequence[Image.Image], span: tuple[int, int] | None = None):
        """Run the processor on the chat prompt; return the :class:`Encoding` (model inputs
        split into per-prompt and per-token ones), the positions of the image tokens, and the
        positions of the tokens covering ``span`` (character offsets in ``text``)."""
        prompt = self.render_chat(text, len(images))
        # images nested per prompt: OneVision's processor then encodes a multi-image prompt in
        # the model's multi-image mode (one padded-square view per image, as in its training)
        out = self.processor(
            text=[prompt],
            images=[list(images)] if images else None,
            return_tensors="pt",
            **(self.processor_kwargs() if images else {}),
        )
        ids = out["input_ids"][0]
        length = ids.numel()
        model_inputs, token_inputs = {}, {}
        for key, value in out.items():
            if key in ("input_ids", "attention_mask") or not isinstance(value, Tensor):
                continue
            if tuple(value.shape) == (1, length):  # aligned with the tokens (e.g. mm_token_type_ids)
                token_inputs[key] = value[0]
            else:
                model_inputs[key] = value
        image_positions = (ids == self.image_token_id).nonzero().flatten()
        positions = []
        if span is not None:
            # The processor expands each image placeholder into the family's image sequence (image
            # tokens, and for some families markers or text around them) and leaves the text after
            # the last image alone: that text keeps its tokens at the same distance from the end.
            plain = self.tokenizer(prompt, return_offsets_mapping=True)
            plain_ids = list(plain["input_ids"])
            text_start = prompt.rfind(text)
            if text_start < 0:
                raise ValueError(f"the chat template changed the user text {text!r}: {prompt!r}")
            start, end = text_start + span[0], text_start + span[1]
            covering = self.token_positions(plain["offset_mapping"], start, end)
            if not covering:
                raise ValueError(f"no token covers {prompt[start:end]!r} in {prompt!r}")
            shift = length - len(plain_ids)
            positions = [i + shift for i in covering]
            if image_positions.numel() and positions[0] <= int(image_positions.max()):
                raise ValueError(f"the target {prompt[start:end]!r} must follow the image in {prompt!r}")
            if ids[positions[0] :].tolist() != plain_ids[covering[0] :]:
                raise ValueError(f"the processor's tokens differ from the tokenizer's from {prompt[start:end]!r} on")
        return Encoding(ids, model_inputs, token_inputs=token_inputs), image_positions, positions

    def encode_text(self, text: str) -> Encoding:
        return self._encode(text, [])[0]

    def encode_existence(self, image: Image.Image, target: str) -> Encoding:
        text, offset = self.existence_prompt(target)
        enc, target_positions = self._encode_on_grid(image, text, (offset, offset + len(target)))
        enc.target_positions = torch.tensor(target_positions, dtype=torch.long)
        return enc

    def encode_image_prompt(self, image: Image.Image, text: str) -> Encoding:
        return self._encode_on_grid(image, text)[0]

    def _encode_on_grid(
        self, image: Image.Image, text: str, span: tuple[int, int] | None = None
    ) -> tuple[Encoding, list[int]]:
        """``text`` on ``image`` with the map's visual positions, grid, valid cells and
        geometry; also the positions of the tokens covering ``span`` (as :meth:`_encode`)."""
        view = self.prepare_image(image)
        enc, image_positions, span_positions = self._encode(text, [view], span)
        grid = self.local_grid(view, enc.model_inputs)
        if image_positions.numel() != grid.num_tokens:
            raise ValueError(
                f"the prompt has {image_positions.numel()} image tokens but the model's layout for a "
                f"{view.size[0]}x{view.size[1]} image has {grid.num_tokens} (grid {grid.grid_hw})"
            )
        geometry = self.to_original(grid.geometry, image, view)
        h, w = grid.grid_hw
        enc.visual_positions = image_positions[grid.offsets]
        enc.grid_hw = (h, w)
        enc.geometry = geometry
        batched = CellGeometry(*(field[None] for field in geometry))
        enc.valid_cells = image_cell_mask(batched, torch.tensor([[h, w]]), h, w)[0]
        return enc, span_positions

    def to_original(self, geometry: CellGeometry, image: Image.Image, view: Image.Image) -> CellGeometry:
        """``geometry`` in pixels of ``view`` -> pixels of ``image`` (``view`` is ``image``
        resized by :meth:`prepare_image`)."""
        scale = torch.tensor(image.size, dtype=torch.float64) / torch.tensor(view.size, dtype=torch.float64)
        return CellGeometry(
            geometry.origin * scale, geometry.cell_size * scale, torch.tensor(image.size, dtype=torch.float64)
        )

    def encode_answer(self, view: FinalView, question: str, options: Sequence[str] | None) -> Encoding:
        images = [self.prepare_image(image) for image in view.images]
        return self._encode(self.answer_prompt(question, options, len(images)), images)[0]
