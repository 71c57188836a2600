"""The relevance-map benchmark shapes and inputs, shared by ``test_bench_relevance_map.py`` and
``tune_relevance_kernel.py`` (CUDA only)."""

import math

import torch

# name: (B, L, N, H, D, S, V) — LLaVA-1.5-7B reads layers 14..31 of 32 heads x 128; LLaVA-OneVision-7B
# reads layers 21..27 of Qwen2's 4 kv heads x 128 with ~6.5k local visual tokens (114 x 57).
SHAPES = {
    "llava15": (1, 18, 620, 32, 128, 3, 576),
    "llava15_b8": (8, 18, 620, 32, 128, 3, 576),
    "onevision": (1, 7, 7400, 4, 128, 3, 6498),
    "onevision_b8": (8, 7, 7400, 4, 128, 3, 6498),
}


def make_inputs(batch, layers, seq_len, heads, head_dim, num_targets, num_visual):
    gen = torch.Generator(device="cuda").manual_seed(0)
    values = torch.randn(batch, layers, seq_len, heads, head_dim, device="cuda", dtype=torch.bfloat16, generator=gen)
    first_visual = 16
    visual_idx = torch.arange(first_visual, first_visual + num_visual, device="cuda").expand(batch, -1).contiguous()
    target_idx = torch.arange(seq_len - 10, seq_len - 10 + num_targets, device="cuda").expand(batch, -1).contiguous()
    h = int(math.isqrt(num_visual))
    while num_visual % h:
        h -= 1
    grid_hw = torch.tensor([[h, num_visual // h]] * batch, device="cuda")
    return values, target_idx, visual_idx, grid_hw


def copy_bandwidth_gbs(num_bytes=2 << 30):
    """Device-to-device copy bandwidth, bytes read + written per second, in GB/s."""
    import triton.testing

    src = torch.empty(num_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return 2 * num_bytes / (ms * 1e-3) / 1e9
