"""Fused Triton kernel for the object relevance map (Sec. 3.2, Fig. 7).

Two launches, no N x N matrix:

1. ``_similarity_rows_kernel``, grid ``(B * L, cdiv(N, BLOCK_N))``: each program reads one
   tile of one layer's value vectors exactly once (all heads), L2-normalises them per head,
   and for every target token of the prompt forms the residual similarity row
   ``r[t, j] = (sum_h cos(v[t, h], v[j, h]) + [j == t]) / 2`` (zero on padding tokens). It writes
   the rows (``[B, L, S, N]`` fp32, a few hundred KB) and each tile's partial row sums.
2. ``_rollout_consensus_kernel``, grid ``(B,)``: per prompt, divides each row by its full sum,
   gathers the visual columns and sums them over layers (rollout), normalises per target
   token, then multiplies across target tokens, renormalising after every multiplication.

Row sums are exact: every real token of the sequence contributes, as in Fig. 7's
``X /= X.sum(-1)``. Values are read in their own dtype (fp32/fp16/bf16) and all math is fp32.
The reference is ``focus_modules.ops.relevance_map.relevance_scores_torch``; it is also this
op's CPU kernel. Set ``TRITON_INTERPRET=1`` before importing this module to run the kernels on
CPU tensors (fp32/fp16) through :func:`relevance_scores_triton`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from focus_modules.ops.relevance_map import DENOMINATOR_EPS, NORM_EPS, relevance_scores_torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _guard(x, eps: tl.constexpr):
    # Same-sign epsilon floor for denominators (0 counts as positive).
    return tl.where(tl.abs(x) < eps, tl.where(x < 0, -eps, eps), x)


@triton.jit
def _similarity_rows_kernel(
    values_ptr, target_ptr, mask_ptr, rows_ptr, partial_ptr,
    num_layers, seq_len, num_heads, head_dim, num_targets, num_chunks,
    stride_vb, stride_vl, stride_vn, stride_vh, stride_vd,
    HAS_MASK: tl.constexpr, S_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    NORM_EPS: tl.constexpr,
):
    pid_bl = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = pid_bl // num_layers
    layer = pid_bl % num_layers

    offs_s = tl.arange(0, S_BLOCK)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < seq_len
    d_ok = offs_d < head_dim
    s_ok = offs_s < num_targets
    target_pos = tl.load(target_ptr + b * num_targets + offs_s, mask=s_ok, other=-1)

    base = values_ptr + b.to(tl.int64) * stride_vb + layer.to(tl.int64) * stride_vl
    tile_ptrs = base + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd
    tile_mask = n_ok[:, None] & d_ok[None, :]

    sim = tl.zeros([S_BLOCK, BLOCK_N], dtype=tl.float32)
    for h in range(num_heads):
        x = tl.load(tile_ptrs + h * stride_vh, mask=tile_mask, other=0.0).to(tl.float32)
        inv_norm = 1.0 / tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), NORM_EPS)  # [BLOCK_N]
        for s in tl.static_range(S_BLOCK):
            # Target rows are few and hot in cache; reloading them beats holding S x D registers.
            pos = tl.load(target_ptr + b * num_targets + s, mask=s < num_targets, other=-1)
            t = tl.load(base + tl.maximum(pos, 0).to(tl.int64) * stride_vn + h * stride_vh + offs_d * stride_vd,
                        mask=d_ok & (pos >= 0), other=0.0).to(tl.float32)
            t = t / tl.maximum(tl.sqrt(tl.sum(t * t, axis=0)), NORM_EPS)
            cos = tl.sum(x * t[None, :], axis=1) * inv_norm  # [BLOCK_N]
            sim = tl.where(offs_s[:, None] == s, sim + cos[None, :], sim)

    if HAS_MASK:
        real = tl.load(mask_ptr + b * seq_len + offs_n, mask=n_ok, other=0) != 0
    else:
        real = n_ok
    identity = offs_n[None, :] == target_pos[:, None]
    residual = (sim + identity.to(tl.float32)) * 0.5
    residual = tl.where(real[None, :] & n_ok[None, :], residual, 0.0)

    row = (b * num_layers + layer) * num_targets + offs_s  # [S_BLOCK]
    tl.store(rows_ptr + row[:, None].to(tl.int64) * seq_len + offs_n[None, :], residual,
             mask=s_ok[:, None] & n_ok[None, :])
    tl.store(partial_ptr + row * num_chunks + pid_n, tl.sum(residual, axis=1), mask=s_ok)


@triton.jit
def _rollout_consensus_kernel(
    rows_ptr, partial_ptr, target_ptr, visual_ptr, rollout_ptr, out_ptr,
    num_layers, seq_len, num_targets, num_visual, num_chunks,
    S_BLOCK: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr, EPS: tl.constexpr,
):
    b = tl.program_id(0)
    offs_s = tl.arange(0, S_BLOCK)
    s_ok = offs_s < num_targets
    target_pos = tl.load(target_ptr + b * num_targets + offs_s, mask=s_ok, other=-1)
    t_ok = s_ok & (target_pos >= 0)

    # Pass 1: rollout[t, v] = sum over layers of r[l, t, visual[v]] / rowsum[l, t].
    target_sum = tl.zeros([S_BLOCK], dtype=tl.float32)
    for v0 in range(0, num_visual, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        in_v = offs_v < num_visual
        visual_pos = tl.load(visual_ptr + b * num_visual + offs_v, mask=in_v, other=-1)
        v_ok = visual_pos >= 0
        acc = tl.zeros([S_BLOCK, BLOCK_V], dtype=tl.float32)
        for layer in range(num_layers):
            row = (b * num_layers + layer) * num_targets + offs_s
            row_sum = tl.zeros([S_BLOCK], dtype=tl.float32)
            for c0 in range(0, num_chunks, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                part = tl.load(partial_ptr + row[:, None] * num_chunks + offs_c[None, :],
                               mask=s_ok[:, None] & (offs_c[None, :] < num_chunks), other=0.0)
                row_sum += tl.sum(part, axis=1)
            r = tl.load(rows_ptr + row[:, None].to(tl.int64) * seq_len + tl.maximum(visual_pos, 0)[None, :],
                        mask=t_ok[:, None] & v_ok[None, :], other=0.0)
            acc += r / _guard(row_sum, EPS)[:, None]
        tl.store(rollout_ptr + (b * S_BLOCK + offs_s[:, None]) * num_visual + offs_v[None, :], acc,
                 mask=in_v[None, :])
        target_sum += tl.sum(acc, axis=1)
    target_sum = _guard(target_sum, EPS)
    tl.debug_barrier()  # pass 2 reads what other threads of this program wrote in pass 1

    # Pass 2: consensus. u_k = (u_{k-1} / c_{k-1}) * p_k, c_k = sum(u_k); padded targets multiply by 1.
    prev_norm = 1.0
    for s in range(0, num_targets):
        is_target = tl.sum(tl.where((offs_s == s) & t_ok, 1, 0)) > 0
        p_norm = tl.sum(tl.where(offs_s == s, target_sum, 0.0))
        total = 0.0
        for v0 in range(0, num_visual, BLOCK_V):
            offs_v = v0 + tl.arange(0, BLOCK_V)
            in_v = offs_v < num_visual
            v_ok = tl.load(visual_ptr + b * num_visual + offs_v, mask=in_v, other=-1) >= 0
            if s == 0:
                running = tl.where(v_ok, 1.0, 0.0)
            else:
                running = tl.load(out_ptr + b * num_visual + offs_v, mask=in_v, other=0.0) / prev_norm
            p = tl.load(rollout_ptr + (b * S_BLOCK + s) * num_visual + offs_v, mask=in_v, other=0.0) / p_norm
            product = tl.where(v_ok, running * tl.where(is_target, p, 1.0), 0.0)
            tl.store(out_ptr + b * num_visual + offs_v, product, mask=in_v)
            total += tl.sum(product, axis=0)
        prev_norm = _guard(total, EPS)
        tl.debug_barrier()
    for v0 in range(0, num_visual, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        in_v = offs_v < num_visual
        u = tl.load(out_ptr + b * num_visual + offs_v, mask=in_v, other=0.0)
        tl.store(out_ptr + b * num_visual + offs_v, u / prev_norm, mask=in_v)


def _launch(values: Tensor, target_idx: Tensor, visual_idx: Tensor, attention_mask: Tensor | None, wrap) -> Tensor:
    batch, num_layers, seq_len, num_heads, head_dim = values.shape
    num_targets, num_visual = target_idx.shape[1], visual_idx.shape[1]
    target_idx = target_idx.contiguous()
    visual_idx = visual_idx.contiguous()
    s_block = triton.next_power_of_2(num_targets)
    block_d = triton.next_power_of_2(head_dim)
    block_n = max(16, min(64, 8192 // block_d))
    num_chunks = triton.cdiv(seq_len, block_n)
    device = values.device

    rows = torch.empty(batch, num_layers, num_targets, seq_len, dtype=torch.float32, device=device)
    partial = torch.empty(batch, num_layers, num_targets, num_chunks, dtype=torch.float32, device=device)
    rollout = torch.empty(batch, s_block, num_visual, dtype=torch.float32, device=device)
    out = torch.empty(batch, num_visual, dtype=torch.float32, device=device)
    mask = attention_mask.contiguous() if attention_mask is not None else target_idx

    wrap(_similarity_rows_kernel)[(batch * num_layers, num_chunks)](
        values, target_idx, mask, rows, partial,
        num_layers, seq_len, num_heads, head_dim, num_targets, num_chunks,
        *values.stride(),
        HAS_MASK=attention_mask is not None, S_BLOCK=s_block, BLOCK_N=block_n, BLOCK_D=block_d,
        NORM_EPS=NORM_EPS, num_warps=4,
    )
    wrap(_rollout_consensus_kernel)[(batch,)](
        rows, partial, target_idx, visual_idx, rollout, out,
        num_layers, seq_len, num_targets, num_visual, num_chunks,
        S_BLOCK=s_block, BLOCK_V=max(16, min(1024, triton.next_power_of_2(num_visual))),
        BLOCK_C=max(16, min(256, triton.next_power_of_2(num_chunks))), EPS=DENOMINATOR_EPS, num_warps=8,
    )
    return out


def relevance_scores_triton(
    values: Tensor, target_idx: Tensor, visual_idx: Tensor, attention_mask: Tensor | None = None
) -> Tensor:
    """Launch the two kernels directly (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1).

    Same contract as ``relevance_scores_torch``: ``[B, V]`` float32 scores in ``visual_idx``
    order, zero at padded entries. Inputs are not checked here.
    """
    return _launch(values, target_idx, visual_idx, attention_mask, wrap=lambda kernel: kernel)


@torch.library.triton_op("focus_modules::relevance_scores", mutates_args=())
def relevance_scores_op(
    values: Tensor, target_idx: Tensor, visual_idx: Tensor, attention_mask: Tensor | None = None
) -> Tensor:
    """The kernels as a ``torch.library`` op: traceable by ``torch.compile``; on CPU tensors it
    dispatches to the PyTorch reference."""
    return _launch(values, target_idx, visual_idx, attention_mask, wrap=torch.library.wrap_triton)


relevance_scores_op.register_kernel("cpu")(relevance_scores_torch)
