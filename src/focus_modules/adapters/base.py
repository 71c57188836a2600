"""The model-adapter interface: everything FOCUS needs to know about one MLLM family.

The wrapper (``focus_modules.wrapper``) runs the steps of Fig. 2 through this interface
only; adapters are the one place that knows prompts, chat templates, image preprocessing,
where the visual tokens sit and how a map cell maps back to pixels. A new family needs a
subclass that implements the three ``encode_*`` methods (and overrides whatever else differs)
and a call to :func:`focus_modules.adapters.register_adapter`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from PIL import Image
from torch import Tensor, nn

from focus_modules import targets as target_text
from focus_modules.adapters.views import (
    Box,
    crop,
    max_centre_distance,
    merge_overlapping,
    paste_on_canvas,
    union_box,
)
from focus_modules.config import FocusConfig, read_model_settings
from focus_modules.modules.value_capture import find_decoder_layers
from focus_modules.ops import boxes as box_ops
from focus_modules.ops.boxes import CellGeometry

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
EXISTENCE_TEMPLATE = "Is there a {target} in the image? Answer Yes or No."
# LLaVA-1.5's instruction for multiple-choice questions (its evaluation prompt).
OPTIONS_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class Encoding:
    """One prompt, tokenised, before batching.

    Attributes:
        input_ids: ``[N]`` token ids, image placeholders already expanded.
        model_inputs: the other model inputs of this prompt (e.g. ``pixel_values`` with a
            leading image dimension), concatenated along dim 0 by :meth:`ModelAdapter.collate`.
        target_positions: ``[S]`` positions of the target-object tokens in ``input_ids``
            (existence prompts only).
        visual_positions: ``[V]`` positions of the visual tokens the map is built from, in
            row-major grid order (existence prompts only).
        grid_hw: ``(h, w)`` of the map, ``h * w == V``.
        valid_cells: ``[h, w]`` bool, False for cells that must not be anchors (padding).
        geometry: where the map's cells lie in the ORIGINAL image (``CellGeometry`` with
            fields of shape ``[2]``; the grid extends past the image where the model's view
            is padded).
        token_inputs: other model inputs aligned with the tokens, ``[N]`` each (e.g.
            Qwen2.5-VL's ``mm_token_type_ids``), left-padded with 0 by :meth:`ModelAdapter.collate`.
    """

    input_ids: Tensor
    model_inputs: dict[str, Tensor] = field(default_factory=dict)
    target_positions: Tensor | None = None
    visual_positions: Tensor | None = None
    grid_hw: tuple[int, int] | None = None
    valid_cells: Tensor | None = None
    geometry: CellGeometry | None = None
    token_inputs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Batch:
    """Collated prompts: ``inputs`` are the model's keyword arguments (``input_ids`` and
    ``attention_mask`` left-padded to ``[P, N]``); ``offsets[p]`` is the padding added in front
    of prompt ``p``, so a position ``i`` of its :class:`Encoding` is ``i + offsets[p]`` here."""

    inputs: dict[str, Tensor]
    offsets: list[int]


@dataclass
class Selection:
    """What the wrapper decided to show for the final answer.

    Attributes:
        question_type: 1 (single instances) or 2 (every instance, e.g. counting).
        boxes: per target, the chosen ROIs as pixel boxes of the original image, best first
            (type 1: at most one per target; type 2: every ROI above ``t_type2``).
    """

    question_type: int
    boxes: list[list[Box]]


@dataclass
class FinalView:
    """The image(s) of the final prompt. ``kind`` says how they were built ("image" = the
    whole image, "crop", "union", "canvas", or an adapter's own kind); ``boxes`` are the
    original-image pixel boxes they show."""

    images: list[Image.Image]
    kind: str
    boxes: list[Box]


def option_lines(options: Sequence[str]) -> list[str]:
    """How options are shown to the model: ``["(A) first", "(B) second", ...]``."""
    return [f"({letter}) {option}" for letter, option in zip(OPTION_LETTERS, options)]


def patch_grid_size(vision_config) -> int:
    """Tokens per side of one vision-encoder view: ``image_size // patch_size``, rounded down
    as the patch convolution does (SigLIP-384/14: 27 patches cover 378 of the 384 pixels)."""
    return vision_config.image_size // vision_config.patch_size


class ModelAdapter(ABC):
    """Base class of model adapters; subclasses set :attr:`family` and :attr:`model_classes`.

    Args:
        model: the HF model (e.g. ``LlavaForConditionalGeneration``), in eval mode.
        processor: its processor (tokenizer + image processor + chat template).
    """

    #: FocusConfig preset family (``FocusConfig.preset(family)``).
    family: ClassVar[str]
    #: Model class names this adapter serves (matched along the model's MRO).
    model_classes: ClassVar[tuple[str, ...]] = ()
    #: Depth of the model the preset's layer range is for (``None``: use it as it is). A model
    #: of another depth gets the same fraction of its own last layers (:meth:`default_config`).
    preset_depth: ClassVar[int | None] = None
    #: Largest ``long side / short side`` the model's image processing accepts (``None``: any);
    #: more elongated images are padded to it (:meth:`fit_aspect_ratio`).
    max_aspect_ratio: ClassVar[float | None] = None

    def __init__(self, model: nn.Module, processor) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        #: :meth:`collate` pads every batch to a multiple of this many tokens (sequence-length
        #: buckets, so that a compiled model sees few distinct shapes).
        self.pad_to_multiple_of = 1

    # --- model structure -------------------------------------------------------------------

    @property
    def native_view_size(self) -> int:
        """Side (pixels) of one view of the vision encoder: its config's ``image_size`` (a tile
        of tiled families). Families with dynamic resolution have none and raise."""
        vision = getattr(self.model.config, "vision_config", None)
        size = getattr(vision, "image_size", None)
        if size is None:
            raise ValueError(f"the {self.family} vision encoder has no fixed view size (no vision_config.image_size)")
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def decoder_layers(self) -> nn.ModuleList:
        """The language model's decoder layers (value capture hooks their ``v_proj``)."""
        return find_decoder_layers(self.model)

    def num_layers(self) -> int:
        """Depth of the language model."""
        return len(self.decoder_layers())

    def default_config(self, dataset: str | None = None, n_steps: int | None = None) -> FocusConfig:
        """Table 7's hyper-parameters for this family, fitted to this model.

        With :attr:`preset_depth` set and a model of another depth, the preset's range
        ``(l, L)`` is rescaled to ``(round(l * depth / preset_depth), depth)``: the same share of
        last layers. A model loaded from a folder with a ``focus_config.json``
        (:func:`focus_modules.config.read_model_settings`) gets the settings it recommends on
        top. ``n_steps`` (when given) overrides the file's.
        """
        settings = read_model_settings(self.model_dir) if self.model_dir else {}
        if n_steps is not None:
            settings["n_steps"] = n_steps
        config = FocusConfig.preset(self.family, dataset=dataset, n_steps=settings.get("n_steps", 8))
        depth = self.num_layers()
        if self.preset_depth is not None and depth != self.preset_depth:
            start = min(round(config.layers[0] * depth / self.preset_depth), depth - 1)
            config = dataclasses.replace(config, layers=(start, depth))
        return dataclasses.replace(config, **settings)

    @property
    def model_dir(self) -> str | None:
        """The local folder the model was loaded from, ``None`` for a model built in memory or
        fetched from the hub."""
        path = getattr(self.model, "name_or_path", "") or getattr(self.model.config, "_name_or_path", "")
        return path if path and Path(path).is_dir() else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # --- prompts (user-message text, before the chat template) -------------------------------

    def target_prompt(self, question: str) -> str:
        """Step I: few-shot prompt asking which objects the question is about."""
        return target_text.target_prompt(question)

    def existence_prompt(self, target: str) -> tuple[str, int]:
        """Steps II and V: ``"Is there a {target} in the image? Answer Yes or No."`` and the
        character offset of ``target`` in it."""
        prefix, _ = EXISTENCE_TEMPLATE.split("{target}")
        return EXISTENCE_TEMPLATE.format(target=target), len(prefix)

    def answer_prompt(self, question: str, options: Sequence[str] | None, num_images: int = 1) -> str:
        """Step VI: the question, then the options as ``(A) ...`` lines and the letter
        instruction; open-ended questions go as they are."""
        if not options:
            return question
        return "\n".join([question, *option_lines(options), OPTIONS_INSTRUCTION])

    # --- encoding ------------------------------------------------------------------------------

    def render_chat(self, text: str, num_images: int) -> str:
        """The full prompt string: ``num_images`` images then ``text`` as the user's turn,
        followed by the assistant's generation prompt (the processor's chat template)."""
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def token_positions(self, offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
        """Indices of the tokens whose character span (from a fast tokenizer's offset mapping)
        overlaps ``[start, end)``; special tokens (empty spans) never match."""
        return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]

    @abstractmethod
    def encode_text(self, text: str) -> Encoding:
        """A text-only chat prompt (step I), ready for generation."""

    @abstractmethod
    def encode_existence(self, image: Image.Image, target: str) -> Encoding:
        """The existence prompt on ``image`` (the whole image in step II, an ROI crop in step
        V), with target positions, visual positions, grid, valid cells and map extent."""

    def encode_existence_targets(self, image: Image.Image, targets: Sequence[str]) -> list[Encoding]:
        """:meth:`encode_existence` for several targets on one image (step II); adapters whose
        image preprocessing does not depend on the text override it to preprocess once."""
        return [self.encode_existence(image, target) for target in targets]

    def encode_image_prompt(self, image: Image.Image, text: str) -> Encoding:
        """``text`` as the user's turn on ``image``, with the map's visual positions, grid,
        valid cells and geometry as :meth:`encode_existence` gives them (no target positions):
        the prompts of a baseline that reads a map off its own prompts (ViCrop's attention)."""
        raise NotImplementedError(f"the {self.family} adapter does not implement encode_image_prompt")

    @abstractmethod
    def encode_answer(self, view: FinalView, question: str, options: Sequence[str] | None) -> Encoding:
        """The final prompt on the final view's image(s), ready for generation."""

    def encode_statement(self, view: FinalView, question: str, statement: str) -> tuple[Encoding, int]:
        """Logits matching (C.5): the final prompt with the question alone (no options), then
        ``statement`` (an option's text) as the start of the assistant's reply.

        Returns:
            the encoding and the number of statement tokens at its end.
        """
        prompt = self.encode_answer(view, question, None)
        tail = self.tokenizer(statement, add_special_tokens=False)["input_ids"]
        if not tail:
            raise ValueError(f"the option {statement!r} has no tokens to score")
        token_inputs = {
            key: torch.cat([value, value.new_zeros(len(tail))]) for key, value in prompt.token_inputs.items()
        }
        ids = torch.cat([prompt.input_ids, torch.tensor(tail, dtype=torch.long)])
        return Encoding(ids, prompt.model_inputs, token_inputs=token_inputs), len(tail)

    def collate(self, encodings: Sequence[Encoding]) -> Batch:
        """Left-pad ``input_ids`` (with :attr:`pad_token_id`) to the longest prompt, rounded up
        to :attr:`pad_to_multiple_of`, and build ``attention_mask``; left-pad every
        ``token_inputs`` entry with 0; concatenate every other model input along dim 0; move to
        the model's device (floating inputs to its dtype)."""
        if not encodings:
            raise ValueError("collate needs at least one encoding")
        length = max(e.input_ids.numel() for e in encodings)
        context = self.context_length
        if context is not None and length > context:
            raise ValueError(
                f"a prompt of {length} tokens (text and image tokens) exceeds the model's context of "
                f"{context} tokens; shorten the question or its options"
            )
        length = self.bucketed(length)
        ids = torch.full((len(encodings), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), length), dtype=torch.long)
        offsets = []
        for row, enc in enumerate(encodings):
            offset = length - enc.input_ids.numel()
            ids[row, offset:] = enc.input_ids
            mask[row, offset:] = 1
            offsets.append(offset)
        inputs = {"input_ids": ids, "attention_mask": mask}
        for key in encodings[0].token_inputs:
            padded = torch.zeros((len(encodings), length), dtype=encodings[0].token_inputs[key].dtype)
            for row, (enc, offset) in enumerate(zip(encodings, offsets)):
                padded[row, offset:] = enc.token_inputs[key]
            inputs[key] = padded
        for key in encodings[0].model_inputs:
            inputs[key] = torch.cat([e.model_inputs[key] for e in encodings], dim=0)
        device, dtype = self.device, self.dtype
        inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
        return Batch(inputs, offsets)

    def bucketed(self, length: int) -> int:
        """``length`` rounded up to a multiple of :attr:`pad_to_multiple_of`."""
        step = self.pad_to_multiple_of
        return -(-length // step) * step

    @property
    def context_length(self) -> int | None:
        """The language model's context (``max_position_embeddings``), ``None`` if unknown."""
        config = getattr(self.model, "config", None)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text_config, "max_position_embeddings", None)

    @property
    def pad_token_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    # --- model calls ----------------------------------------------------------------------------

    def last_logits(self, batch: Batch) -> Tensor:
        """One forward pass; ``[P, V]`` logits at the last position (no cache, only the last
        position's logits are computed where the model supports it)."""
        out = self.model(**batch.inputs, use_cache=False, **self._keep_last_logits())
        return out.logits[:, -1]

    def statement_log_likelihoods(self, batch: Batch, lengths: Sequence[int]) -> Tensor:
        """One forward pass; ``[P]`` mean log-probability of the last ``lengths[p]`` tokens of
        prompt ``p`` given the tokens before them (the score of logits matching, C.5: the
        option whose statement the model finds likeliest wins). Only the logits of the last
        ``max(lengths) + 1`` positions are computed where the model supports it; prompts are
        left-padded, so every statement ends at the last position."""
        keep = max(lengths) + 1
        out = self.model(**batch.inputs, use_cache=False, **self._keep_last_logits(keep))
        logits = out.logits[:, -keep:]
        ids = batch.inputs["input_ids"]
        scores = []
        for p, n in enumerate(lengths):
            log_probs = logits[p, keep - 1 - n : keep - 1].float().log_softmax(-1)  # position i predicts i + 1
            scores.append(log_probs.gather(-1, ids[p, -n:, None]).mean())
        return torch.stack(scores)

    def forward_on_cache(self, inputs: dict[str, Tensor], cache) -> None:
        """One forward pass that appends its keys and values to ``cache`` (a ``DynamicCache``,
        empty or holding the tokens in front of ``inputs``); only the last position's logits
        are computed where the model supports it (they are not returned)."""
        params = inspect.signature(self.model.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self.model(**inputs, **{name: cache}, use_cache=True, **self._keep_last_logits())

    def suffix_position_ids(self, prefix: Batch, rows: Tensor, length: int) -> Tensor | None:
        """Position ids of ``length`` tokens that continue the rows ``rows`` of the ``prefix``
        batch on its KV cache, or ``None`` when the model counts on from the cache length (1-D
        positions, as the prefix itself was numbered from its first, padded, column)."""
        return None

    def generate(self, batch: Batch, max_new_tokens: int) -> list[str]:
        """Greedy generation; the new text of each prompt, special tokens removed, stripped."""
        out = self.generation_model(batch).generate(
            **batch.inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_token_id,
        )
        new_tokens = out[:, batch.inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def generation_model(self, batch: Batch) -> nn.Module:
        """The module whose ``generate`` runs ``batch`` (the model itself by default)."""
        return self.model

    def _keep_last_logits(self, count: int = 1) -> dict[str, int]:
        params = inspect.signature(self.model.forward).parameters
        for name in ("logits_to_keep", "num_logits_to_keep"):  # >= 4.50, 4.45-4.49
            if name in params:
                return {name: count}
        return {}

    # --- outputs ----------------------------------------------------------------------------------

    def yes_no_ids(self) -> tuple[list[int], list[int]]:
        """Token ids that spell "Yes" and "No" as a reply's first token (bare, SentencePiece
        ``▁`` and byte-level ``Ġ`` forms, either case), kept when they decode back to the word."""
        vocab = self.tokenizer.get_vocab()
        found = []
        for word in ("yes", "no"):
            ids = []
            for prefix in ("", "▁", "Ġ"):
                for spelling in (word.capitalize(), word):
                    token_id = vocab.get(prefix + spelling)
                    if (
                        token_id is not None
                        and token_id not in ids
                        and self.tokenizer.decode([token_id]).strip().lower() == word
                    ):
                        ids.append(token_id)
            if not ids:
                raise ValueError(f"the tokenizer has no token that spells {word.capitalize()!r}")
            found.append(sorted(ids))
        return found[0], found[1]

    def cells_to_pixels(self, boxes: Tensor, geometry: CellGeometry, downsample: int = 1) -> Tensor:
        """``[K, 4]`` map-cell boxes (xyxy, x2/y2 exclusive, on the map downsampled by
        ``downsample``) -> ``[K, 4]`` float pixel boxes of the original image, clipped to it.
        ``geometry`` is the map's own (an :class:`Encoding`'s); the arithmetic is
        :func:`focus_modules.ops.boxes.cells_to_pixels`."""
        scaled = geometry._replace(cell_size=geometry.cell_size * downsample)
        return box_ops.cells_to_pixels(boxes, scaled)

    def fit_aspect_ratio(self, image: Image.Image) -> tuple[Image.Image, str | None]:
        """``image`` padded on the right or bottom with :attr:`background_color` to
        :attr:`max_aspect_ratio`, and a note saying so (``None`` when it already fits). The
        padding keeps the original's pixel coordinates, so boxes stay in its frame."""
        width, height = image.size
        limit = self.max_aspect_ratio
        if limit is None or max(width, height) <= limit * min(width, height):
            return image, None
        size = (width, math.ceil(width / limit)) if width > height else (math.ceil(height / limit), height)
        padded = Image.new("RGB", size, self.background_color)
        padded.paste(image, (0, 0))
        return padded, (
            f"image of {width}x{height} padded to {size[0]}x{size[1]}: the model accepts aspect ratios up to {limit:g}"
        )

    @property
    def background_color(self) -> tuple[int, int, int]:
        """Fill colour of padding and canvases: the image processor's mean colour."""
        mean = getattr(getattr(self.processor, "image_processor", None), "image_mean", None) or (0.0, 0.0, 0.0)
        return tuple(int(round(m * 255)) for m in mean)

    def image_and_crop_view(self, image: Image.Image, box: Box, kind: str) -> FinalView:
        """A two-image final view of kind ``kind``: the whole image, then the crop of ``box``
        (ViCrop's final input). Multi-image families override it."""
        return FinalView([image, crop(image, box)], kind, [box])

    def final_view(self, image: Image.Image, selection: Selection, config: FocusConfig) -> FinalView:
        """Final input of a global-view model (A.5). Type 1: the best ROI's crop; several
        targets: their union box, or, when two targets' centres are farther apart than
        ``t_obj_dist`` pixels, their ROIs pasted on a canvas at their relative positions.
        Type 2: the selected ROIs, overlapping ones merged, pasted on a canvas. No selected ROI:
        the whole image. Multi-image families override this."""
        chosen = [box for boxes in selection.boxes for box in boxes]
        if not chosen:
            return FinalView([image], "image", [])
        if selection.question_type == 2:
            merged = merge_overlapping(chosen)
            return FinalView([paste_on_canvas(image, merged, self.background_color)], "canvas", merged)
        if len(chosen) == 1:
            return FinalView([crop(image, chosen[0])], "crop", chosen)
        if max_centre_distance(chosen) > config.t_obj_dist:
            return FinalView([paste_on_canvas(image, chosen, self.background_color)], "canvas", chosen)
        union = union_box(chosen)
        return FinalView([crop(image, union)], "union", [union])
