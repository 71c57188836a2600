"""Adapter for LLaVA-1.5 (``LlavaForConditionalGeneration``, llava-hf layout).

LLaVA-1.5 sees one global view: the image is padded to a square with the image processor's
mean colour (LLaVA's ``expand2square``; the HF processor's default centre crop would cut off
the sides), resized to the vision tower's resolution, and encoded as ``a x a`` patch tokens
(24 x 24 = 576 for CLIP ViT-L/14-336) that sit contiguously, row-major, where the prompt's
``<image>`` placeholder was. The relevance map is that ``a x a`` grid; cells whose centre lies
in the padding are excluded from anchors; a cell maps back to pixels through the padding
offset and the scale of the square.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import transformers
from packaging.version import Version
from PIL import Image
from torch import nn

from focus_modules.adapters.base import Batch, Encoding, FinalView, ModelAdapter, patch_grid_size
from focus_modules.adapters.views import Box, expand_to_square
from focus_modules.ops.boxes import CellGeometry, image_cell_mask

# Before 4.48, LLaVA sends any prompt with fewer image tokens than `image_seq_length` (a
# text-only one too) down a legacy expansion path that fails without pixels.
LEGACY_TEXT_ONLY = Version(transformers.__version__) < Version("4.48")

# The conversation format of LLaVA-1.5 (llava-hf chat template), used when a processor
# carries no chat template; it renders the same string as the template.
LLAVA_FORMAT = "USER: {images}{text} ASSISTANT:"

# Vision towers that encode one fixed square view as a row-major patch grid, and the tokens
# they put in front of it (CLIP: CLS; SigLIP: none). Others under the Llava class (Pixtral's
# variable grid with row-break tokens) are refused rather than mapped onto a wrong grid.
SQUARE_GRID_TOWERS = {"clip_vision_model": 1, "siglip_vision_model": 0}


class LlavaAdapter(ModelAdapter):
    """LLaVA-1.5: 24 x 24 global-view map over the padded square, layers (14, 32) of 32."""

    family = "llava-1.5"
    model_classes = ("LlavaForConditionalGeneration",)
    preset_depth = 32  # Table 7's (14, 32) is for LLaVA-1.5-7B (Vicuna-7B, 32 layers): its last 56 %

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        config = model.config
        vision = config.vision_config
        self.grid_size = patch_grid_size(vision)
        self.image_size = vision.image_size
        self.image_token_id = int(getattr(config, "image_token_id", None) or config.image_token_index)
        self.num_prefix_tokens = self._prefix_tokens(model, processor)
        self.image_processor = processor.image_processor

    @staticmethod
    def _prefix_tokens(model, processor) -> int:
        """Image tokens in front of the ``a x a`` patch grid, as the processor counts them:
        ``num_additional_image_tokens`` (CLIP's CLS) unless ``vision_feature_select_strategy``
        is ``"default"``, which drops the first one.

        Raises:
            ValueError: the checkpoint is not a single square grid (e.g. a Pixtral tower under
                the Llava class), or processor and model disagree about the image tokens.
        """
        config = model.config
        tower = config.vision_config.model_type
        llava_processor = any(cls.__name__ == "LlavaProcessor" for cls in type(processor).__mro__)
        if tower not in SQUARE_GRID_TOWERS or not llava_processor:
            raise ValueError(
                f"the LLaVA-1.5 adapter serves a {' or '.join(SQUARE_GRID_TOWERS)} tower with a LlavaProcessor "
                f"(one square patch grid per image); this {type(model).__name__} has a {tower} tower and a "
                f"{type(processor).__name__}, whose image tokens it cannot map to a grid"
            )
        strategy = getattr(config, "vision_feature_select_strategy", "default")
        processor_strategy = getattr(processor, "vision_feature_select_strategy", None)
        if processor_strategy is not None and processor_strategy != strategy:
            raise ValueError(
                f"the processor selects vision features with {processor_strategy!r}, the model "
                f"with {strategy!r}: their image-token counts disagree"
            )
        patch_size = getattr(processor, "patch_size", None)
        if patch_size is not None and patch_size != config.vision_config.patch_size:
            raise ValueError(
                f"the processor's patch_size {patch_size} differs from the vision tower's "
                f"{config.vision_config.patch_size}"
            )
        additional = getattr(processor, "num_additional_image_tokens", None)
        if additional is None:  # processors before the attribute existed: the tower's own
            additional = SQUARE_GRID_TOWERS[tower]
        prefix = additional - (1 if strategy == "default" else 0)
        if prefix < 0:
            raise ValueError(
                f"vision_feature_select_strategy 'default' drops the first image token, but the "
                f"processor counts {additional} tokens in front of the patch grid: the grid would "
                "lose a patch; use 'full'"
            )
        return prefix

    def generation_model(self, batch: Batch) -> nn.Module:
        """Text-only prompts (step I) go to the language model itself on transformers < 4.48,
        where it is a ``*ForCausalLM`` (same computation: LLaVA adds nothing without an image)."""
        if LEGACY_TEXT_ONLY and "pixel_values" not in batch.inputs:
            return self.model.language_model
        return self.model

    # --- images ---------------------------------------------------------------------------------

    def prepare_image(self, image: Image.Image) -> tuple[Image.Image, CellGeometry]:
        """Pad to a square with the mean colour; return it and where the ``a x a`` map's cells
        lie in ``image``."""
        square, (left, top) = expand_to_square(image, self.background_color)
        side = square.width
        x1, y1, x2, y2 = self._visible_fraction()
        a = self.grid_size
        geometry = CellGeometry(
            origin=torch.tensor([x1 * side - left, y1 * side - top], dtype=torch.float64),
            cell_size=torch.tensor([(x2 - x1) * side / a, (y2 - y1) * side / a], dtype=torch.float64),
            image_size=torch.tensor(image.size, dtype=torch.float64),
        )
        return square, geometry

    def _visible_fraction(self) -> Box:
        """Part of a square input that survives the image processor's resize and centre crop,
        as fractions of its side ((0, 0, 1, 1) for llava-hf's processors)."""
        ip = self.image_processor
        size = dict(ip.size)
        if "shortest_edge" in size:
            rh = rw = size["shortest_edge"]
        else:
            rh, rw = size["height"], size["width"]
        if getattr(ip, "do_center_crop", False):
            ch, cw = ip.crop_size["height"], ip.crop_size["width"]
        else:
            ch, cw = rh, rw
        left, top = (rw - cw) // 2, (rh - ch) // 2
        return left / rw, top / rh, (left + cw) / rw, (top + ch) / rh

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"the image processor produced {tuple(pixels.shape[-2:])} pixels but the vision tower "
                f"expects {self.image_size} x {self.image_size}"
            )
        return pixels

    def valid_cells(self, geometry: CellGeometry) -> torch.Tensor:
        """``[a, a]`` bool: cells whose centre lies in the image, not in the padding."""
        a = self.grid_size
        batched = CellGeometry(*(field[None] for field in geometry))
        return image_cell_mask(batched, torch.tensor([[a, a]]), a, a)[0]

    # --- prompts ----------------------------------------------------------------------------------

    def render_chat(self, text: str, num_images: int) -> str:
        if getattr(self.processor, "chat_template", None):
            return super().render_chat(text, num_images)
        return LLAVA_FORMAT.format(images="<image>\n" * num_images, text=text)

    def _tokenize(self, text: str, images: Sequence[Image.Image], span: tuple[int, int] | None = None):
        """Tokenise the chat prompt, expand every ``<image>`` into the image's tokens; return
        the ids, the start of each image's block, and the positions of the tokens covering
        ``span`` (character offsets in ``text``)."""
        prompt = self.render_chat(text, len(images))
        encoded = self.tokenizer(prompt, return_offsets_mapping=span is not None)
        ids = list(encoded["input_ids"])
        placeholders = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(placeholders) != len(images):
            raise ValueError(
                f"the prompt has {len(placeholders)} image tokens (id {self.image_token_id}) for "
                f"{len(images)} images: {prompt!r}"
            )
        per_image = self.num_prefix_tokens + self.grid_size**2

        def expanded(i: int) -> int:
            return i + sum(per_image - 1 for p in placeholders if p < i)

        expanded_ids = []
        for t in ids:
            expanded_ids.extend([t] * per_image if t == self.image_token_id else [t])
        block_starts = [expanded(p) for p in placeholders]
        positions = []
        if span is not None:
            text_start = prompt.rfind(text)
            if text_start < 0:
                raise ValueError(f"the chat template changed the user text {text!r}: {prompt!r}")
            start, end = text_start + span[0], text_start + span[1]
            positions = [expanded(i) for i in self.token_positions(encoded["offset_mapping"], start, end)]
            if not positions:
                raise ValueError(f"no token covers {prompt[start:end]!r} in {prompt!r}")
        return torch.tensor(expanded_ids, dtype=torch.long), block_starts, positions

    # --- encoding ---------------------------------------------------------------------------------

    def encode_text(self, text: str) -> Encoding:
        ids, _, _ = self._tokenize(text, [])
        return Encoding(ids)

    def encode_existence(self, image: Image.Image, target: str) -> Encoding:
        return self.encode_existence_targets(image, [target])[0]

    def encode_existence_targets(self, image: Image.Image, targets: Sequence[str]) -> list[Encoding]:
        """The image is padded, preprocessed and its cells mapped once for all targets (on a
        4K image the image processor takes seconds on a CPU; the prompts differ only in text)."""
        square, geometry = self.prepare_image(image)
        pixels = self.pixel_values([square])
        valid = self.valid_cells(geometry)
        encodings = []
        for target in targets:
            text, offset = self.existence_prompt(target)
            ids, (block,), target_positions = self._tokenize(text, [square], (offset, offset + len(target)))
            encoding = self._on_grid(ids, block, pixels, geometry, valid)
            encoding.target_positions = torch.tensor(target_positions, dtype=torch.long)
            encodings.append(encoding)
        return encodings

    def encode_image_prompt(self, image: Image.Image, text: str) -> Encoding:
        square, geometry = self.prepare_image(image)
        ids, (block,), _ = self._tokenize(text, [square])
        return self._on_grid(ids, block, self.pixel_values([square]), geometry, self.valid_cells(geometry))

    def _on_grid(self, ids, block: int, pixels, geometry: CellGeometry, valid) -> Encoding:
        """An encoding whose map is the ``a x a`` patch grid of the image block starting at
        position ``block`` (after the tower's prefix tokens)."""
        start = block + self.num_prefix_tokens
        a = self.grid_size
        return Encoding(
            ids,
            {"pixel_values": pixels},
            visual_positions=torch.arange(start, start + a * a),
            grid_hw=(a, a),
            valid_cells=valid,
            geometry=geometry,
        )

    def encode_answer(self, view: FinalView, question: str, options: Sequence[str] | None) -> Encoding:
        squares = [self.prepare_image(image)[0] for image in view.images]
        ids, _, _ = self._tokenize(self.answer_prompt(question, options, len(squares)), squares)
        return Encoding(ids, {"pixel_values": self.pixel_values(squares)})
