"""Fused Triton kernel for the object relevance map (Sec. 3.2, Fig. 7).

Two launches, no N x N matrix:

1. ``_similarity_rows_kernel``, grid ``(cdiv(N, BLOCK_N), B * L)``: each program reads one
   tile of one layer's value vectors exactly once (all heads), L2-normalises them per head,
   and for every target token of the prompt forms the residual similarity row
   ``r[t, j] = (sum_h cos(v[t, h], v[j, h]) + [j == t]) / 2`` (zero on padding tokens). It writes
   the rows (``[B, L, S, N]`` fp32, a few hundred KB) and each tile's partial row sums.
2. ``_rollout_consensus_kernel``, grid ``(B, cdiv(V, BLOCK_V))``: each program divides the rows
   by their full sums, gathers its block of visual columns and sums them over layers
   (rollout), and adds its block's per-target sums to a per-prompt total. The last program of
   a prompt to finish (an acq_rel counter) normalises per target token and multiplies across
   target tokens, renormalising after every multiplication (consensus).

Row sums are exact: every real token of the sequence contributes, as in Fig. 7's
``X /= X.sum(-1)``. Values are read in their own dtype (fp32/fp16/bf16) and all math is fp32.

This module holds the kernels and their launcher only and imports nothing from the package: the
op around them (input checks, the ``torch.library`` registration, the PyTorch reference that is
its CPU kernel and its oracle, the epsilons) is ``focus_modules.ops.relevance_map``. Set
``TRITON_INTERPRET=1`` before importing this module to run the kernels on CPU tensors
(fp32/fp16) through :func:`relevance_scores_triton`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch import Tensor

# Whether triton runs the kernels in its CPU interpreter (it reads the variable at import too).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _guard(x, eps: tl.constexpr):
    # Same-sign epsilon floor for denominators (0 counts as positive).
    return tl.where(tl.abs(x) < eps, tl.where(x < 0, -eps, eps), x)


@triton.jit
def _similarity_rows_kernel(
    values_ptr,
    target_ptr,
    mask_ptr,
    rows_ptr,
    partial_ptr,
    target_sum_ptr,
    done_ptr,
    num_layers,
    seq_len,
    num_heads,
    head_dim,
    num_targets,
    num_chunks,
    stride_vb,
    stride_vl,
    stride_vn,
    stride_vh,
    stride_vd,
    HAS_MASK: tl.constexpr,
    S_BLOCK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NORM_EPS: tl.constexpr,
):
    # Chunks vary fastest so that neighbouring programs stream neighbouring memory.
    pid_n = tl.program_id(0)
    pid_bl = tl.program_id(1)
    b = pid_bl // num_layers
    layer = pid_bl % num_layers

    offs_s = tl.arange(0, S_BLOCK)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < seq_len
    d_ok = offs_d < head_dim
    s_ok = offs_s < num_targets
    target_pos = tl.load(target_ptr + b * num_targets + offs_s, mask=s_ok, other=-1)

    if (pid_n == 0) & (layer == 0):
        # Reset the second kernel's per-prompt accumulators (no separate memset launch).
        tl.store(target_sum_ptr + b * S_BLOCK + offs_s, tl.zeros([S_BLOCK], dtype=tl.float32))
        tl.store(done_ptr + b, 0)

    base = values_ptr + b.to(tl.int64) * stride_vb + layer.to(tl.int64) * stride_vl
    tile_ptrs = base + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd

    tile_mask = n_ok[:, None] & d_ok[None, :]
    sim = tl.zeros([BLOCK_N, S_BLOCK], dtype=tl.float32)
    for h in range(num_heads):
        x = tl.load(tile_ptrs + h * stride_vh, mask=tile_mask, other=0.0).to(tl.float32)
        inv_x = 1.0 / tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), NORM_EPS)  # [BLOCK_N]
        # S is a few target tokens: one multiply-reduce per target beats a tensor-core dot padded
        # to 16 rows (whose operand staging through shared memory halved the bandwidth) and
        # beats per-target [BLOCK_N, D] accumulators reduced once (register pressure).
        for s in tl.static_range(S_BLOCK):
            if s < num_targets:
                pos = tl.load(target_ptr + b * num_targets + s)
                # A [1, D] row keeps the target's reductions inside a warp, like the tile's rows.
                t = tl.load(
                    base + tl.maximum(pos, 0).to(tl.int64) * stride_vn + h * stride_vh + offs_d[None, :] * stride_vd,
                    mask=d_ok[None, :] & (pos >= 0),
                    other=0.0,
                ).to(tl.float32)
                inv_t = 1.0 / tl.maximum(tl.sqrt(tl.sum(t * t, axis=1)), NORM_EPS)  # [1]
                cos = tl.sum(x * t, axis=1) * inv_x * inv_t  # [BLOCK_N]
                sim = tl.where(offs_s[None, :] == s, sim + cos[:, None], sim)

    if HAS_MASK:
        real = tl.load(mask_ptr + b * seq_len + offs_n, mask=n_ok, other=0) != 0
    else:
        real = n_ok
    identity = offs_n[:, None] == target_pos[None, :]
    residual = (sim + identity.to(tl.float32)) * 0.5
    residual = tl.where(real[:, None] & n_ok[:, None], residual, 0.0)

    row = (b * num_layers + layer) * num_targets + offs_s  # [S_BLOCK]
    tl.store(
        rows_ptr + row[None, :].to(tl.int64) * seq_len + offs_n[:, None], residual, mask=s_ok[None, :] & n_ok[:, None]
    )
    tl.store(partial_ptr + row * num_chunks + pid_n, tl.sum(residual, axis=0), mask=s_ok)


@triton.jit
def _rollout_consensus_kernel(
    rows_ptr,
    partial_ptr,
    target_ptr,
    visual_ptr,
    rollout_ptr,
    target_sum_ptr,
    done_ptr,
    out_ptr,
    num_layers,
    seq_len,
    num_targets,
    num_visual,
    num_chunks,
    S_BLOCK: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_C: tl.constexpr,
    TAIL_BLOCK: tl.constexpr,
    EPS: tl.constexpr,
):
    b = tl.program_id(0)
    pid_v = tl.program_id(1)
    offs_s = tl.arange(0, S_BLOCK)
    s_ok = offs_s < num_targets
    target_pos = tl.load(target_ptr + b * num_targets + offs_s, mask=s_ok, other=-1)
    t_ok = s_ok & (target_pos >= 0)

    # Rollout of this block of visual tokens: sum over layers of r[l, t, visual[v]] / rowsum[l, t].
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    in_v = offs_v < num_visual
    visual_pos = tl.load(visual_ptr + b * num_visual + offs_v, mask=in_v, other=-1)
    v_ok = visual_pos >= 0
    acc = tl.zeros([S_BLOCK, BLOCK_V], dtype=tl.float32)
    for layer in range(num_layers):
        row = (b * num_layers + layer) * num_targets + offs_s
        parts = tl.zeros([S_BLOCK, BLOCK_C], dtype=tl.float32)
        for c0 in range(0, num_chunks, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            parts += tl.load(
                partial_ptr + row[:, None] * num_chunks + offs_c[None, :],
                mask=s_ok[:, None] & (offs_c[None, :] < num_chunks),
                other=0.0,
            )
        # One reduction after the loop (a reduction inside it crashed triton 3.6's compiler).
        row_sum = tl.sum(parts, axis=1)
        r = tl.load(
            rows_ptr + row[:, None].to(tl.int64) * seq_len + tl.maximum(visual_pos, 0)[None, :],
            mask=t_ok[:, None] & v_ok[None, :],
            other=0.0,
        )
        acc += r / _guard(row_sum, EPS)[:, None]
    tl.store(rollout_ptr + (b * S_BLOCK + offs_s[:, None]) * num_visual + offs_v[None, :], acc, mask=in_v[None, :])
    tl.atomic_add(target_sum_ptr + b * S_BLOCK + offs_s, tl.sum(acc, axis=1), mask=s_ok, sem="relaxed")

    # The last block of this prompt to finish does the consensus (acq_rel orders the stores above).
    tl.debug_barrier()
    finished = tl.atomic_add(done_ptr + b, 1, sem="acq_rel")
    if finished == tl.num_programs(1) - 1:
        target_sum = _guard(tl.atomic_add(target_sum_ptr + b * S_BLOCK + offs_s, 0.0, mask=s_ok), EPS)
        # u_k = (u_{k-1} / c_{k-1}) * p_k with c_k = sum(u_k); padded target slots multiply by 1.
        prev_norm = 1.0
        for s in range(0, num_targets):
            is_target = tl.sum(tl.where((offs_s == s) & t_ok, 1, 0)) > 0
            p_norm = tl.sum(tl.where(offs_s == s, target_sum, 0.0))
            total = 0.0
            for v0 in range(0, num_visual, TAIL_BLOCK):
                offs_w = v0 + tl.arange(0, TAIL_BLOCK)
                in_w = offs_w < num_visual
                w_ok = tl.load(visual_ptr + b * num_visual + offs_w, mask=in_w, other=-1) >= 0
                if s == 0:
                    running = tl.where(w_ok, 1.0, 0.0)
                else:
                    running = tl.load(out_ptr + b * num_visual + offs_w, mask=in_w, other=0.0) / prev_norm
                p = tl.load(rollout_ptr + (b * S_BLOCK + s) * num_visual + offs_w, mask=in_w, other=0.0) / p_norm
                product = tl.where(w_ok, running * tl.where(is_target, p, 1.0), 0.0)
                tl.store(out_ptr + b * num_visual + offs_w, product, mask=in_w)
                total += tl.sum(product, axis=0)
            prev_norm = _guard(total, EPS)
            tl.debug_barrier()  # the next step reads what other threads just stored
        for v0 in range(0, num_visual, TAIL_BLOCK):
            offs_w = v0 + tl.arange(0, TAIL_BLOCK)
            in_w = offs_w < num_visual
            u = tl.load(out_ptr + b * num_visual + offs_w, mask=in_w, other=0.0)
            tl.store(out_ptr + b * num_visual + offs_w, u / prev_norm, mask=in_w)


def relevance_scores_triton(
    values: Tensor,
    target_idx: Tensor,
    visual_idx: Tensor,
    attention_mask: Tensor | None = None,
    *,
    norm_eps: float,
    denominator_eps: float,
    block_n: int = 32,
    rows_warps: int = 8,
    block_v: int = 512,
    rollout_warps: int = 8,
    tail_block: int = 8192,
    wrap: Callable | None = None,
) -> Tensor:
    """Launch the two kernels (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).

    Inputs are not checked here (``focus_modules.ops.relevance_map`` does that). The default
    tile sizes and warps are the fastest measured on an H100 on the paper's shapes
    (``benchmarks/tune_relevance_kernel.py``).

    Args:
        values: ``[B, L, N, H, D]`` value vectors, fp32/fp16/bf16, any strides.
        target_idx: ``[B, S]`` long, target-token positions, ``-1`` for padding.
        visual_idx: ``[B, V]`` long, visual-token positions in row-major grid order, ``-1``
            for padding (trailing).
        attention_mask: ``[B, N]``, nonzero for real tokens; ``None`` means all are real.
        norm_eps: per-head norms are floored at this value.
        denominator_eps: every denominator is pushed to at least this magnitude, keeping its
            sign (0 counts as positive).
        block_n: tokens per program of the first kernel.
        rows_warps: warps per program of the first kernel.
        block_v: visual tokens per program of the second kernel.
        rollout_warps: warps per program of the second kernel.
        tail_block: visual tokens per step of the consensus tail.
        wrap: applied to each kernel before it is launched (``torch.library.wrap_triton``
            inside a ``triton_op``); ``None`` launches the kernels as they are.

    Returns:
        ``[B, V]`` float32 scores in ``visual_idx`` order, zero at padded entries.
    """
    if wrap is None:
        wrap = _unwrapped
    batch, num_layers, seq_len, num_heads, head_dim = values.shape
    num_targets, num_visual = target_idx.shape[1], visual_idx.shape[1]
    target_idx = target_idx.contiguous()
    visual_idx = visual_idx.contiguous()
    s_block = triton.next_power_of_2(num_targets)
    block_d = triton.next_power_of_2(head_dim)
    num_chunks = triton.cdiv(seq_len, block_n)
    device = values.device

    rows = torch.empty(batch, num_layers, num_targets, seq_len, dtype=torch.float32, device=device)
    partial = torch.empty(batch, num_layers, num_targets, num_chunks, dtype=torch.float32, device=device)
    rollout = torch.empty(batch, s_block, num_visual, dtype=torch.float32, device=device)
    target_sum = torch.empty(batch, s_block, dtype=torch.float32, device=device)
    done = torch.empty(batch, dtype=torch.int32, device=device)
    out = torch.empty(batch, num_visual, dtype=torch.float32, device=device)
    mask = attention_mask.contiguous() if attention_mask is not None else target_idx

    wrap(_similarity_rows_kernel)[(num_chunks, batch * num_layers)](
        values,
        target_idx,
        mask,
        rows,
        partial,
        target_sum,
        done,
        num_layers,
        seq_len,
        num_heads,
        head_dim,
        num_targets,
        num_chunks,
        *values.stride(),
        HAS_MASK=attention_mask is not None,
        S_BLOCK=s_block,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        NORM_EPS=norm_eps,
        num_warps=rows_warps,
    )
    wrap(_rollout_consensus_kernel)[(batch, triton.cdiv(num_visual, block_v))](
        rows,
        partial,
        target_idx,
        visual_idx,
        rollout,
        target_sum,
        done,
        out,
        num_layers,
        seq_len,
        num_targets,
        num_visual,
        num_chunks,
        S_BLOCK=s_block,
        BLOCK_V=block_v,
        BLOCK_C=max(16, min(256, triton.next_power_of_2(num_chunks))),
        TAIL_BLOCK=tail_block,
        EPS=denominator_eps,
        num_warps=rollout_warps,
    )
    return out


def _unwrapped(kernel):
    return kernel
