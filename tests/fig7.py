"""A literal transcription of the paper's Fig. 7 (dense N x N, float64): the oracle for the
relevance map. Shared by the tests and the benchmarks (``pythonpath = ["tests"]``).

The only additions to Fig. 7 are the ones docs/design.md §3 fixes: padded tokens (attention_mask
0) get zero columns so they drop out of the row sums, the row/global denominators are guarded
by a same-sign epsilon, and the consensus is renormalised after every multiplication.
"""

import torch

EPS = 1e-12


def _guard(x):
    return torch.where(x.abs() < EPS, torch.where(x < 0, -EPS, EPS).to(x.dtype), x)


def relevance_map_fig7(values, target_idx, visual_idx, grid_hw, attention_mask=None, dtype=torch.float64):
    """Same contract as ``focus_modules.functional.relevance_map``; one prompt at a time."""
    batch, num_layers, seq_len, heads, head_dim = values.shape
    h_max, w_max = (int(x) for x in grid_hw.max(0).values)
    out = torch.zeros(batch, h_max, w_max, dtype=dtype, device=values.device)
    for b in range(batch):
        X = values[b].to(dtype)  # O, N, H, D (Fig. 7 has O, H, N, D; we store N before H)
        X = X / X.norm(dim=-1, keepdim=True).clamp_min(EPS)  # l2_normalize per head
        X = X.reshape(num_layers, seq_len, heads * head_dim)  # O, N, H*D
        X = torch.bmm(X, X.permute(0, 2, 1))  # O, N, N
        real = torch.ones(seq_len, dtype=dtype, device=values.device)
        if attention_mask is not None:
            real = (attention_mask[b] != 0).to(dtype)
        x_visual = visual_idx[b][visual_idx[b] >= 0]
        x_target = target_idx[b][target_idx[b] >= 0]
        object_rel_map = torch.ones(len(x_visual), dtype=dtype, device=values.device)
        for target in x_target:
            pseudo_attn = torch.zeros(len(x_visual), dtype=dtype, device=values.device)
            for layer in range(num_layers):
                identity = torch.eye(seq_len, dtype=dtype, device=values.device)
                X_layer = (X[layer] + identity) / 2 * real[None, :]
                X_layer = X_layer / _guard(X_layer.sum(dim=-1, keepdim=True))
                pseudo_attn += X_layer[target, x_visual]
            pseudo_attn = pseudo_attn / _guard(pseudo_attn.sum())
            object_rel_map = object_rel_map * pseudo_attn
            object_rel_map = object_rel_map / _guard(object_rel_map.sum())
        h, w = (int(x) for x in grid_hw[b])
        out[b, :h, :w] = object_rel_map.reshape(h, w)
    return out


# Unit roundoff of float32 (round to nearest): every fp32 operation's relative error is at most U.
U = torch.finfo(torch.float32).eps / 2


def _gamma(n):
    """Higham's gamma_n = n u / (1 - n u): relative error bound of an n-term sum or dot product in
    fp32, whatever the order of summation (sequential, pairwise, SIMD lanes, FMA)."""
    return n * U / (1 - n * U)


def fp32_error_bound(values, target_idx, visual_idx, grid_hw, attention_mask=None):
    """Per-cell bound on ``|fp32 result - exact result|`` for any fp32 implementation of the map.

    A first-order running error analysis of the Fig. 7 steps, carried in float64 beside the
    exact values. Each step adds the rounding bound of its own sizes (``D`` for the per-head
    norm, ``H*D`` for a cosine sum, ``N`` for a row sum, ``L`` over layers, ``V`` for the
    global sums) to the errors it inherits, scaled by the data's own magnitudes, so a row sum
    near zero widens its row's bound. An error is kept in two parts: per cell, and a common
    scale factor of the whole vector (what dividing by an inexact sum causes), which the next
    normalisation to sum 1 removes exactly. The bound depends on the sizes and the data, not
    on the CPU's summation order or vector width (the gamma_n bounds hold for any order), so a
    test against it holds on any machine and still fails on any error well above fp32 rounding.

    Returns:
        ``[B, Hmax, Wmax]`` float64 absolute bounds (zero outside each grid).
    """
    f64 = torch.float64
    batch, num_layers, seq_len, heads, head_dim = values.shape
    h_max, w_max = (int(x) for x in grid_hw.max(0).values)
    out = torch.zeros(batch, h_max, w_max, dtype=f64, device=values.device)
    normalise = (head_dim + 1) * U / 2 + 2 * U  # per-head norm: D squares summed, sqrt, divide
    for b in range(batch):
        X = values[b].to(f64)
        X = (X / X.norm(dim=-1, keepdim=True).clamp_min(EPS)).reshape(num_layers, seq_len, heads * head_dim)
        real = torch.ones(seq_len, dtype=f64, device=values.device)
        if attention_mask is not None:
            real = (attention_mask[b] != 0).to(f64)
        x_visual = visual_idx[b][visual_idx[b] >= 0]
        x_target = target_idx[b][target_idx[b] >= 0]
        consensus = torch.ones(len(x_visual), dtype=f64, device=values.device)
        consensus_err, consensus_scale = torch.zeros_like(consensus), 0.0
        for target in x_target:
            rollout = torch.zeros_like(consensus)
            rollout_err = torch.zeros_like(consensus)
            for layer in range(num_layers):
                a = X[layer, target]
                sim = X[layer] @ a  # [N]
                sim_err = (2 * normalise + _gamma(heads * head_dim)) * (X[layer].abs() @ a.abs())
                shifted = sim + (torch.arange(seq_len, device=values.device) == target).to(f64)
                residual = shifted / 2 * real
                residual_err = (sim_err + U * shifted.abs()) / 2 * real
                row_sum = residual.sum()
                row_sum_err = residual_err.sum() + _gamma(seq_len) * residual.abs().sum()
                p = residual[x_visual] / row_sum
                # Layers have different row sums: their scale errors do not cancel in the sum.
                rollout_err += (residual_err[x_visual] + p.abs() * row_sum_err) / row_sum.abs() + U * p.abs()
                rollout += p
            rollout_err += _gamma(num_layers) * rollout.abs() * num_layers  # <= gamma_L * sum_l |p_l|
            per_target, per_target_err, per_target_scale = _normalise(rollout, rollout_err)
            product = consensus * per_target
            product_err = per_target.abs() * consensus_err + consensus.abs() * per_target_err + U * product.abs()
            consensus, consensus_err, consensus_scale = _normalise(product, product_err)
        final_err = consensus_err + (consensus_scale + U) * consensus.abs()  # + the float32 result
        h, w = (int(x) for x in grid_hw[b])
        out[b, :h, :w] = final_err.reshape(h, w)
    return out


def _normalise(x, x_err):
    """``x / x.sum()``, its per-cell error bound, and the bound on its common relative scale
    error (from the inexact sum; any scale error ``x`` carried in is removed here)."""
    total = x.sum()
    total_err = x_err.sum() + _gamma(len(x)) * x.abs().sum()
    q = x / total
    return q, x_err / total.abs() + U * q.abs(), (total_err / total.abs()).item()
