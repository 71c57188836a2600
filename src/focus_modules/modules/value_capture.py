"""``ValueCapture``: read the value vectors of selected decoder layers during a forward pass.

FOCUS needs the value vectors that the KV-cache would hold (Sec. 3.2). A forward hook on each
selected layer's ``self_attn.v_proj`` returns exactly those (values never get RoPE), works
with sdpa / FlashAttention and ``use_cache=False``, and does not depend on the cache API,
which changed three times between transformers 4.46 and 5.x (docs/design.md §10).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

# Where the language model's decoder layers live, relative to the full multimodal model, per
# transformers version (docs/design.md §10). Every path starts at the language model, so the vision
# tower's own ``self_attn.v_proj`` modules can never match.
DECODER_LAYER_PATHS = (
    "model.language_model.layers",  # >= 4.52: LLaVA, LLaVA-OneVision, Qwen2.5-VL
    "language_model.model.layers",  # 4.46-4.51: LLaVA, LLaVA-OneVision
    "language_model.layers",  # >= 4.52 property on the *ForConditionalGeneration classes
    "model.layers",  # 4.46-4.51 Qwen2.5-VL, and plain causal LMs
)


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers of a (multimodal) HF model.

    Raises:
        ValueError: if none of :data:`DECODER_LAYER_PATHS` leads to a ``ModuleList`` of layers
            with ``self_attn.v_proj``.
    """
    for path in DECODER_LAYER_PATHS:
        module = model
        for name in path.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and len(module) > 0 and _value_projection(module[0]) is not None:
            return module
    raise ValueError(
        f"could not find the language model's decoder layers in {type(model).__name__}: tried "
        f"{', '.join(DECODER_LAYER_PATHS)}; pass decoder_layers= explicitly"
    )


def _value_projection(layer: nn.Module) -> nn.Module | None:
    attn = getattr(layer, "self_attn", None)
    return getattr(attn, "v_proj", None)


def _head_dim(layer: nn.Module) -> int:
    attn = layer.self_attn
    head_dim = getattr(attn, "head_dim", None)
    if head_dim is None:
        config = getattr(attn, "config", None)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(head_dim)


class ValueCapture:
    """Context manager that records the value vectors of decoder layers ``l..L-1``.

    Hooks go only on the selected layers' ``self_attn.v_proj`` and are removed on exit, even
    when the forward raises. Every forward inside the context overwrites one preallocated
    ``[B, L, N, H_kv * D]`` buffer (reallocated only when ``B`` or ``N`` change), so
    :attr:`values` holds the last forward's values. The buffer lives on the device of the first
    selected layer; values of layers on other devices (a model split with ``device_map``) are
    copied into it.

    Under ``torch.compile``, call :meth:`attach` once before the model's first compiled call:
    the hooks then stay on the model and record only inside the context. (Dynamo does not
    guard on module hooks, so hooks added or removed after a module was compiled would be
    ignored.) Inside a compiled graph a hook only keeps a reference to its output, which is
    written to the buffer when the values are read, so the hooks cause no graph break.

    Args:
        model: the (multimodal) HF model; its decoder layers are found with
            :func:`find_decoder_layers` unless ``decoder_layers`` is given.
        layers: half-open range ``(l, L)`` of 0-based decoder-layer indices.
        decoder_layers: the language model's decoder layers, to bypass the lookup.

    Illustration (needs a loaded model; not run as a doctest)::

        with ValueCapture(model, layers=(14, 32)) as capture:
            model(**inputs, use_cache=False)
        capture.values.shape  # [B, 18, N, H_kv, D]
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], decoder_layers: nn.ModuleList | None = None) -> None:
        self.decoder_layers = decoder_layers if decoder_layers is not None else find_decoder_layers(model)
        if len(layers) != 2:
            raise ValueError(f"layers must be a half-open range (l, L), got {layers}")
        start, end = int(layers[0]), int(layers[1])
        depth = len(self.decoder_layers)
        if not (0 <= start < end <= depth):
            raise ValueError(
                f"layers=({start}, {end}) is not a range inside the {depth} decoder layers (0..{depth - 1})"
            )
        self.layers = (start, end)
        self.head_dim = _head_dim(self.decoder_layers[start])
        self._buffer: Tensor | None = None
        self._written: list[bool] = [False] * (end - start)
        self._handles: list = []
        self._attached = False  # hooks kept between contexts (attach)
        self._recording = False
        self._pending: list[tuple[int, Tensor]] = []  # outputs seen inside a compiled graph

    def attach(self) -> ValueCapture:
        """Put the hooks on the model until :meth:`detach` (they record only inside the
        context); for models run under ``torch.compile``."""
        if not self._handles:
            self._register()
        self._attached = True
        return self

    def detach(self) -> None:
        """Remove hooks kept by :meth:`attach`."""
        self._attached = False
        if not self._recording:
            self._remove()

    def __enter__(self) -> ValueCapture:
        if self._recording:
            raise RuntimeError("ValueCapture is already active")
        if not self._handles:
            self._register()
        self._recording = True
        return self

    def __exit__(self, *exc) -> None:
        self._recording = False
        self._pending.clear()
        if not self._attached:
            self._remove()

    def _register(self) -> None:
        start, end = self.layers
        for slot, index in enumerate(range(start, end)):
            v_proj = _value_projection(self.decoder_layers[index])
            self._handles.append(v_proj.register_forward_hook(self._make_hook(slot)))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, slot: int):
        def hook(module: nn.Module, args, output: Tensor) -> None:
            if not self._recording:
                return
            if torch.compiler.is_compiling():
                # traced into a compiled graph: keep a reference (a graph output), written to
                # the buffer when the values are read, so the graph needs no break
                self._pending.append((slot, output))
            else:
                self._write(slot, output)

        return hook

    def _write(self, slot: int, output: Tensor) -> None:
        if slot == 0:  # the first selected layer starts a new forward
            self._begin_forward(output)
        elif self._buffer is None or output.shape != self._buffer[:, slot].shape:
            raise RuntimeError(
                f"value capture: layer {self.layers[0] + slot} produced {tuple(output.shape)} but the "
                f"forward started with {None if self._buffer is None else tuple(self._buffer[:, 0].shape)}"
            )
        self._buffer[:, slot].copy_(output.detach())
        self._written[slot] = True

    def _begin_forward(self, output: Tensor) -> None:
        if output.dim() != 3:
            raise RuntimeError(f"v_proj output must be [B, N, H_kv*D], got {tuple(output.shape)}")
        batch, seq_len, width = output.shape
        shape = (batch, self.layers[1] - self.layers[0], seq_len, width)
        buf = self._buffer
        if buf is None or buf.shape != shape or buf.dtype != output.dtype or buf.device != output.device:
            self._buffer = torch.empty(shape, dtype=output.dtype, device=output.device)
        self._written = [False] * shape[1]

    @property
    def raw_values(self) -> Tensor:
        """``[B, L, N, H_kv * D]`` values of the last forward (the buffer itself; the next
        forward inside the context overwrites it)."""
        pending, self._pending = self._pending, []
        for slot, output in pending:
            self._write(slot, output)
        if self._buffer is None:
            raise RuntimeError("no forward pass has run inside the ValueCapture context")
        missing = [self.layers[0] + i for i, done in enumerate(self._written) if not done]
        if missing:
            raise RuntimeError(f"decoder layers {missing} did not run in the last forward pass")
        return self._buffer

    @property
    def values(self) -> Tensor:
        """``[B, L, N, H_kv, D]`` values of the last forward (a view of the buffer)."""
        return rearrange(self.raw_values, "b l n (h d) -> b l n h d", d=self.head_dim)

    def __repr__(self) -> str:
        return f"ValueCapture(layers={self.layers}, head_dim={self.head_dim}, active={self._recording})"
