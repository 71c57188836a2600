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
