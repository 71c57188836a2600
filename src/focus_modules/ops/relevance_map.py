"""Object relevance map from value-value cosine similarity (Sec. 3.2, Eq. 1-4, Fig. 7).

This file holds the input checks, the pure-PyTorch path (the CPU path and the oracle the
Triton kernel is tested against), the epsilons both paths use, and the ``torch.library`` op
around the fused kernels of ``focus_modules.kernels.relevance_map`` (which imports nothing from
here). Both paths compute the same ``[B, V]`` scores in the order of ``visual_idx``;
:func:`relevance_map` lays them out on each prompt's grid.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

# Smallest magnitude a denominator may take; keeps its sign (docs/design.md §3).
DENOMINATOR_EPS = 1e-12
# Per-head norms below this count as zero (the same floor as F.normalize).
NORM_EPS = 1e-12

IMPLS = ("auto", "triton", "torch")


def guard_denominator(x: Tensor, eps: float = DENOMINATOR_EPS) -> Tensor:
    """Push ``x`` away from zero to magnitude ``eps``, keeping its sign (0 counts as +)."""
    return torch.where(x.abs() < eps, torch.where(x < 0, -eps, eps).to(x.dtype), x)


def relevance_map(
    values: Tensor,
    target_idx: Tensor,
    visual_idx: Tensor,
    grid_hw: Tensor,
    attention_mask: Tensor | None = None,
    impl: str = "auto",
) -> Tensor:
    """Object relevance maps of a batch of prompts.

    Per prompt: value vectors are L2-normalised per head; for every selected layer and target
    token, the similarity to token ``j`` is the sum over heads of the cosines; the identity is
    added and halved (residual), each row divided by its sum over real tokens, the visual
    columns summed over layers (rollout), normalised per target token, and multiplied across
    target tokens with a renormalisation after every multiplication (consensus).

    Args:
        values: ``[B, L, N, H, D]`` value vectors of the ``L`` selected decoder layers
            (``N`` sequence length, ``H`` kv heads, ``D`` head dim); any float dtype, math in
            fp32 (fp64 for fp64 input on the torch path).
        target_idx: ``[B, S]`` long, sequence positions of the target-object tokens, ``-1``
            for padding; every prompt needs at least one.
        visual_idx: ``[B, V]`` long, sequence positions of the visual tokens in row-major grid
            order, ``-1`` for padding (trailing).
        grid_hw: ``[B, 2]`` long, ``(h, w)`` of each map; ``h * w`` equals the number of
            valid ``visual_idx`` entries of that prompt.
        attention_mask: ``[B, N]``, 1 for real tokens, 0 for padding (excluded from the row
            sums); ``None`` means every token is real.
        impl: ``"auto"`` (Triton for CUDA tensors when triton is installed, else torch),
            ``"triton"`` or ``"torch"``.

    Returns:
        ``[B, Hmax, Wmax]`` float32 maps; each sums to 1 over its valid ``h x w`` cells and
        is zero outside them.
    """
    check_relevance_inputs(values, target_idx, visual_idx, grid_hw, attention_mask)
    scores = relevance_scores(values, target_idx, visual_idx, attention_mask, impl=impl)
    return scores_to_grid(scores, grid_hw)


def relevance_scores(
    values: Tensor,
    target_idx: Tensor,
    visual_idx: Tensor,
    attention_mask: Tensor | None = None,
    impl: str = "auto",
) -> Tensor:
    """The maps of :func:`relevance_map` as ``[B, V]`` float32 in ``visual_idx`` order, zero at
    padded entries. Inputs are not checked here (see :func:`check_relevance_inputs`)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "triton" if values.is_cuda and triton_available() else "torch"
    if impl == "torch":
        return relevance_scores_torch(values, target_idx, visual_idx, attention_mask)
    return _relevance_scores_triton(values, target_idx, visual_idx, attention_mask)


def relevance_scores_torch(
    values: Tensor, target_idx: Tensor, visual_idx: Tensor, attention_mask: Tensor | None = None
) -> Tensor:
    """Pure-PyTorch scores: only the ``S`` target rows of each layer's similarity matrix are
    formed (``[B, S, N]``), never ``N x N``. One layer at a time bounds the fp32 copy."""
    batch, num_layers, seq_len, _, _ = values.shape
    compute_dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    target_valid = target_idx >= 0
    visual_valid = visual_idx >= 0
    target_pos = target_idx.clamp_min(0)
    visual_pos = visual_idx.clamp_min(0)
    if attention_mask is None:
        real = torch.ones(batch, seq_len, dtype=compute_dtype, device=values.device)
    else:
        real = (attention_mask != 0).to(compute_dtype)
    # [j == t]: the identity matrix's target rows.
    identity_rows = F.one_hot(target_pos, seq_len).to(compute_dtype)  # [B, S, N]
    visual_cols = visual_pos[:, None, :].expand(-1, target_idx.shape[1], -1)  # [B, S, V]

    rollout = torch.zeros(visual_cols.shape, dtype=compute_dtype, device=values.device)
    for layer in range(num_layers):
        v = F.normalize(values[:, layer].to(compute_dtype), dim=-1, eps=NORM_EPS)
        v = rearrange(v, "b n h d -> b n (h d)")
        v_target = v.gather(1, target_pos[..., None].expand(-1, -1, v.shape[-1]))  # [B, S, H*D]
        sim = v_target @ v.transpose(1, 2)  # [B, S, N]: sum over heads of per-head cosines
        residual = (sim + identity_rows) / 2 * real[:, None, :]
        row_sum = residual.sum(-1, keepdim=True)
        rollout += residual.gather(2, visual_cols) / guard_denominator(row_sum)

    rollout = rollout * visual_valid[:, None, :]
    per_target = rollout / guard_denominator(rollout.sum(-1, keepdim=True))  # global normalisation
    consensus = visual_valid.to(compute_dtype)
    for s in range(target_idx.shape[1]):
        product = consensus * per_target[:, s]
        product = product / guard_denominator(product.sum(-1, keepdim=True))
        consensus = torch.where(target_valid[:, s, None], product, consensus)
    return consensus.float()


def scores_to_grid(scores: Tensor, grid_hw: Tensor) -> Tensor:
    """Lay ``[B, V]`` row-major scores out as ``[B, Hmax, Wmax]``, zeros outside each grid."""
    h_max, w_max = (int(x) for x in grid_hw.max(0).values.tolist())
    rows = torch.arange(h_max, device=scores.device)[None, :, None]
    cols = torch.arange(w_max, device=scores.device)[None, None, :]
    h = grid_hw[:, 0, None, None].to(scores.device)
    w = grid_hw[:, 1, None, None].to(scores.device)
    inside = (rows < h) & (cols < w)
    flat = torch.where(inside, rows * w + cols, 0).flatten(1)
    return torch.where(inside, rearrange(scores.gather(1, flat), "b (h w) -> b h w", w=w_max), 0.0)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _relevance_scores_triton(values, target_idx, visual_idx, attention_mask):
    if not triton_available():
        raise RuntimeError("impl='triton' needs the triton package; install it or use impl='torch'")
    from focus_modules.kernels import relevance_map as kernel

    if values.is_cuda:
        return relevance_scores_op()(values, target_idx, visual_idx, attention_mask)
    if kernel.INTERPRET:
        return _launch_kernels(values, target_idx, visual_idx, attention_mask)
    raise ValueError(
        "impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before import, to run the "
        "kernel in triton's CPU interpreter); use impl='torch' or impl='auto' on the CPU"
    )


def _launch_kernels(values, target_idx, visual_idx, attention_mask, wrap=None) -> Tensor:
    from focus_modules.kernels.relevance_map import relevance_scores_triton

    return relevance_scores_triton(
        values, target_idx, visual_idx, attention_mask, norm_eps=NORM_EPS, denominator_eps=DENOMINATOR_EPS, wrap=wrap
    )


@functools.cache
def relevance_scores_op():
    """The fused kernels as the ``torch.library`` op ``focus_modules::relevance_scores``:
    traceable by ``torch.compile``; on CPU tensors it runs :func:`relevance_scores_torch`.

    Registered on first use (launching it needs triton, which importing this module must not).
    Inputs are not checked here (see :func:`check_relevance_inputs`).
    """

    @torch.library.triton_op("focus_modules::relevance_scores", mutates_args=())
    def op(values: Tensor, target_idx: Tensor, visual_idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return _launch_kernels(values, target_idx, visual_idx, attention_mask, wrap=torch.library.wrap_triton)

    op.register_kernel("cpu")(relevance_scores_torch)
    return op


def check_relevance_inputs(
    values: Tensor,
    target_idx: Tensor,
    visual_idx: Tensor,
    grid_hw: Tensor,
    attention_mask: Tensor | None = None,
) -> None:
    """Raise ``ValueError`` (naming the offending shape or prompt) on inconsistent inputs."""
    if values.dim() != 5 or not values.is_floating_point():
        raise ValueError(f"values must be a float tensor [B, L, N, H, D], got {values.dtype} {tuple(values.shape)}")
    batch, num_layers, seq_len, heads, head_dim = values.shape
    if min(batch, num_layers, seq_len, heads, head_dim) == 0:
        raise ValueError(f"values has an empty dimension: {tuple(values.shape)}")
    for name, idx in (("target_idx", target_idx), ("visual_idx", visual_idx)):
        if idx.dim() != 2 or idx.shape[0] != batch or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} must be an integer tensor [B={batch}, *], got {idx.dtype} {tuple(idx.shape)}")
        if idx.device != values.device:
            raise ValueError(f"{name} is on {idx.device} but values on {values.device}")
    if target_idx.shape[1] == 0:
        raise ValueError(f"target_idx {tuple(target_idx.shape)} has no target tokens")
    if visual_idx.shape[1] == 0:
        raise ValueError(f"visual_idx {tuple(visual_idx.shape)} has no visual tokens")
    if grid_hw.shape != (batch, 2):
        raise ValueError(f"grid_hw must have shape [B={batch}, 2], got {tuple(grid_hw.shape)}")
    if attention_mask is not None and attention_mask.shape != (batch, seq_len):
        raise ValueError(f"attention_mask must have shape [B={batch}, N={seq_len}], got {tuple(attention_mask.shape)}")

    for name, idx in (("target_idx", target_idx), ("visual_idx", visual_idx)):
        bad = (idx < -1) | (idx >= seq_len)
        if bool(bad.any()):
            b, col = (int(x) for x in bad.nonzero()[0])
            raise ValueError(
                f"{name}[{b}, {col}] = {int(idx[b, col])} lies outside the sequence of length N={seq_len} "
                "(use -1 for padding)"
            )
        if attention_mask is not None:
            on_padding = (idx >= 0) & (attention_mask.gather(1, idx.clamp_min(0)) == 0)
            if bool(on_padding.any()):
                b, col = (int(x) for x in on_padding.nonzero()[0])
                raise ValueError(f"{name}[{b}, {col}] = {int(idx[b, col])} points at a padding token of attention_mask")

    num_targets = (target_idx >= 0).sum(1)
    if bool((num_targets == 0).any()):
        b = int((num_targets == 0).nonzero()[0])
        raise ValueError(f"prompt {b} has an empty target set (target_idx row is all -1)")
    visual_valid = visual_idx >= 0
    num_visual = visual_valid.sum(1)
    if bool((visual_valid[:, 1:] & ~visual_valid[:, :-1]).any()):
        raise ValueError("visual_idx padding (-1) must be trailing in every row")
    grid = grid_hw.to(num_visual.device)
    mismatch = (grid[:, 0] * grid[:, 1] != num_visual) | (grid.min(1).values < 1)
    if bool(mismatch.any()):
        b = int(mismatch.nonzero()[0])
        h, w = (int(x) for x in grid[b])
        raise ValueError(
            f"prompt {b}: grid_hw = ({h}, {w}) needs h*w = {h * w} visual tokens with h, w >= 1, "
            f"but visual_idx has {int(num_visual[b])} valid entries"
        )
