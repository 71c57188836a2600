"""Hyper-parameters of FOCUS, by their paper names (Sec. 3, A.3, Table 7)."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("llava-1.5", "llava-onevision", "qwen2.5-vl", "qwen3-vl", "internvl", "gemma3")
DATASETS = ("vstar", "hrbench", "mme-rw-lite")
N_STEPS_IN_PAPER = (1, 2, 3, 4, 6, 8)
# Decoder layers of each family's preset, for its reference model (adapters rescale to other depths).
PRESET_LAYERS = {
    "llava-1.5": (14, 32),
    "llava-onevision": (21, 28),
    "qwen2.5-vl": (14, 28),
    "qwen3-vl": (18, 36),
    "internvl": (14, 28),
    "gemma3": (17, 34),
}
# Families whose map is one fixed-size global view (LLaVA-1.5's proposal settings, no smoothing).
GLOBAL_VIEW_FAMILIES = ("llava-1.5", "gemma3")
# What a question is answered with: FOCUS, the plain model on the whole image, or a visual-search
# baseline (focus_modules.baselines: ZoomEye, ViCrop's rel-att and grad-att).
METHODS = ("focus", "vanilla", "zoomeye", "vicrop-rel", "vicrop-grad")
# How overlapping windows of the windowed relevance phase combine (FocusConfig.window_combine;
# focus_modules.ops.stitch_maps).
WINDOW_COMBINES = ("mean", "max")
# The FocusConfig fields of the windowed relevance phase (all inert while window_size is None).
WINDOW_FIELDS = ("window_size", "window_overlap", "window_combine")
# Step VI: generate the option letter (A.2, the paper's results) or logits matching (C.5).
ANSWER_SCHEMES = ("generate", "logits")
# Prompt and option order of `focus eval`: the paper's (A.2) or lmms-eval's (focus_modules.eval.protocols).
PROTOCOLS = ("paper", "lmms-eval")
# A model folder may carry its recommended FOCUS settings beside config.json: a JSON object of
# FocusConfig fields, e.g. {"layers": [3, 6]} (see read_model_settings).
SETTINGS_FILE = "focus_config.json"


@dataclass(frozen=True)
class FocusConfig:
    """Every FOCUS hyper-parameter; build one with :meth:`preset` and adjust with
    ``dataclasses.replace``.

    Attributes:
        layers: half-open range ``(l, L)`` of 0-based decoder layers whose value vectors
            build the relevance map; ``(14, 32)`` reads layers 14..31.
        n_steps: number of top ROIs per target whose existence confidence is verified.
        overrun: if every one of the top ``n_steps`` ROIs answers "No", keep verifying
            further ROIs until one answers "Yes" or none is left (Sec. C.1).
        k: number of anchor points taken from the relevance map.
        s_min: side of the initial square ROI, in map cells.
        s_max: largest side an ROI may grow to, in map cells.
        s_dist: anchors closer than this (Euclidean, in cells) to a stronger one are dropped.
        expand_threshold: an ROI keeps growing while the mean relevance inside it stays
            at or above ``expand_threshold * anchor score``.
        nms_threshold: IoU above which a weaker ROI is suppressed.
        t_type2: confidence above which an ROI is kept for type-2 (counting) questions.
        t_obj_dist: pixel distance between target centres above which type-1 ROIs are pasted
            on a canvas instead of merged into their union box.
        smooth_sigma: std of the Gaussian smoothing applied to the map before proposals
            (global-local models), ``None`` for none.
        downsample: average-pooling factor applied after smoothing (1 = none).
        window_size: ``None`` (the paper): one relevance map of the whole image. An int: the
            side, in pixels of the original image, of the square windows of the windowed
            relevance phase (Sec. 4.6's proposed extension for 4K-8K images): the existence
            prompt runs on each window as a crop at the model's resolution, and the windows'
            maps are stitched into one finer map of the whole image
            (:mod:`focus_modules.ops.stitch_maps`; docs/design.md).
        window_overlap: least overlap of neighbouring windows, a fraction of ``window_size``
            in ``[0, 1)``; 0.5 puts every pixel in the central half of some window.
        window_combine: how the windows covering one stitched cell combine: ``"max"`` (the
            strongest window) or ``"mean"`` (their average); docs/design.md §14 has the
            measurement behind the default.
    """

    layers: tuple[int, int] = (14, 32)
    n_steps: int = 8
    overrun: bool = True
    k: int = 30
    s_min: int = 3
    s_max: int = 5
    s_dist: float = 2.0
    expand_threshold: float = 0.5
    nms_threshold: float = 0.3
    t_type2: float = 0.6
    t_obj_dist: float = 1200.0
    smooth_sigma: float | None = None
    downsample: int = 1
    window_size: int | None = None
    window_overlap: float = 0.5
    window_combine: str = "max"

    def __post_init__(self) -> None:
        start, end = self.layers
        if not (0 <= start < end):
            raise ValueError(f"layers must be a half-open range (l, L) with 0 <= l < L, got {self.layers}")
        if self.n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {self.n_steps}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not (1 <= self.s_min <= self.s_max):
            raise ValueError(f"need 1 <= s_min <= s_max, got s_min={self.s_min}, s_max={self.s_max}")
        if self.s_dist < 0:
            raise ValueError(f"s_dist must be >= 0, got {self.s_dist}")
        if not (0.0 <= self.nms_threshold <= 1.0):
            raise ValueError(f"nms_threshold must lie in [0, 1], got {self.nms_threshold}")
        if self.smooth_sigma is not None and self.smooth_sigma <= 0:
            raise ValueError(f"smooth_sigma must be > 0 or None, got {self.smooth_sigma}")
        if self.downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {self.downsample}")
        if self.window_size is not None and (isinstance(self.window_size, bool) or self.window_size < 1):
            raise ValueError(f"window_size must be a positive number of pixels or None, got {self.window_size}")
        if not (0.0 <= self.window_overlap < 1.0):
            raise ValueError(f"window_overlap must lie in [0, 1), got {self.window_overlap}")
        if self.window_size is not None and self.window_size * (1.0 - self.window_overlap) < 1.0:
            raise ValueError(
                f"window_size={self.window_size} with window_overlap={self.window_overlap} moves the windows "
                "by less than one pixel; lower window_overlap"
            )
        if self.window_combine not in WINDOW_COMBINES:
            raise ValueError(f"window_combine must be one of {WINDOW_COMBINES}, got {self.window_combine!r}")

    @classmethod
    def preset(cls, family: str, dataset: str | None = None, n_steps: int = 8, **overrides) -> FocusConfig:
        """Table 7's hyper-parameters for a model family and benchmark.

        Args:
            family: one of ``"llava-1.5"``, ``"llava-onevision"``, ``"qwen2.5-vl"``, ``"qwen3-vl"``,
                ``"internvl"``, ``"gemma3"``.
            dataset: ``"vstar"``, ``"hrbench"``, ``"mme-rw-lite"`` or ``None`` (the
                non-V*Bench values, which Table 7 uses for every other dataset).
            n_steps: verification budget; LLaVA-1.5 uses ``k = 15`` below 4 steps.
            **overrides: any field, applied last.

        Qwen2.5-VL is not in Table 7: it gets OneVision's proposal settings (both are
        high-resolution maps) and layers ``(14, 28)``, the last 50 % of Qwen2.5-VL-7B's 28
        layers, inside the paper's "last 25-60 %" advice for new models (A.3).
        The smoothing sigma (1.0) and downsampling factor (2) of the global-local models are
        our choice: the paper names the steps (Sec. 3.2) but not their parameters.

        The newer families get the last 50 % of their reference model's layers and the proposal
        settings of the nearest paper family: Qwen3-VL (8B, 36 layers: ``(18, 36)``) and InternVL
        (InternVL3-8B, 28 layers: ``(14, 28)``) have high-resolution maps over many tokens, like
        OneVision; Gemma 3 (4B, 34 layers: ``(17, 34)``) has one fixed-size global view, like
        LLaVA-1.5, whose settings it takes (no smoothing or downsampling of its 16 x 16 map).
        """
        if family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
        if dataset is not None and dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS} or None")
        vstar = dataset == "vstar"
        if family in GLOBAL_VIEW_FAMILIES:
            values = dict(k=15 if n_steps < 4 else 30, s_max=5, s_dist=2.0 if vstar else 3.0, t_type2=0.6)
        else:
            values = dict(k=30, s_max=9 if vstar else 5, s_dist=2.0, t_type2=0.5, smooth_sigma=1.0, downsample=2)
        values["layers"] = PRESET_LAYERS[family]
        values.update(n_steps=n_steps, s_min=3, t_obj_dist=1200.0, expand_threshold=0.5, nms_threshold=0.3)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown FocusConfig fields {sorted(unknown)}")
        values.update(overrides)
        return cls(**values)

    def check_layers(self, num_layers: int) -> None:
        """Raise ``ValueError`` if :attr:`layers` does not fit a decoder of ``num_layers`` layers."""
        start, end = self.layers
        if end > num_layers:
            raise ValueError(
                f"layers={self.layers} reads decoder layers {start}..{end - 1}, but the model has "
                f"{num_layers} layers (0..{num_layers - 1}); choose layers inside it, e.g. "
                f"--set layers={num_layers // 2},{num_layers} on the command line, or "
                f"dataclasses.replace(config, layers=({num_layers // 2}, {num_layers})) in Python"
            )


def read_model_settings(model_dir: str | Path) -> dict[str, Any]:
    """The FOCUS settings a model folder recommends (its ``focus_config.json``), as typed
    FocusConfig field values; ``{}`` when ``model_dir`` is not a folder or has no such file.

    The file is a JSON object of FocusConfig fields, e.g. ``{"layers": [3, 6]}`` for a model
    whose depth the presets do not fit; explicit settings (``--set``, ``--n-steps``) override it.

    Raises:
        ValueError: the file is not a JSON object of known fields with valid values.
    """
    path = Path(model_dir) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of FocusConfig fields, got {type(data).__name__}")
    hints = typing.get_type_hints(FocusConfig)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"{path}: FocusConfig has no fields {unknown}; fields: {', '.join(hints)}")
    settings = {name: tuple(value) if isinstance(value, list) else value for name, value in data.items()}
    try:
        FocusConfig(**settings)  # the values against FocusConfig's rules, defaults for the rest
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    return settings
