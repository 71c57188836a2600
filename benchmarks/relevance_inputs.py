"""The relevance-map benchmark shapes and inputs, shared by ``test_bench_relevance_map.py``,
``tune_relevance_kernel.py`` and ``gpu_receipts.py``."""

import math

import torch

# name: (B, L, N, H, D, S, V) — LLaVA-1.5-7B reads layers 14..31 of 32 heads x 128; LLaVA-OneVision-7B
# reads layers 21..27 of Qwen2's 4 kv heads x 128 with ~6.5k local visual tokens (114 x 57).
# Qwen2.5-VL-7B reads layers 14..27 of its 4 kv heads x 128 (GQA: the capture hooks v_proj, so
# values have the kv heads, not the 28 query heads) with a 3840 x 2160 image at the released
# processor's max_pixels (12845056): smart_resize gives 3836 x 2156, a 77 x 137 grid of merged
# tokens (10,549), plus 64 text tokens.
SHAPES = {
    "llava15": (1, 18, 620, 32, 128, 3, 576),
    "llava15_b8": (8, 18, 620, 32, 128, 3, 576),
    "onevision": (1, 7, 7400, 4, 128, 3, 6498),
    "onevision_b8": (8, 7, 7400, 4, 128, 3, 6498),
    "qwen2_5_vl": (1, 14, 10613, 4, 128, 3, 10549),
    "qwen2_5_vl_b8": (8, 14, 10613, 4, 128, 3, 10549),
}


def make_inputs(batch, layers, seq_len, heads, head_dim, num_targets, num_visual, device="cuda", dtype=torch.bfloat16):
    """Random values ``[B, L, N, H, D]`` with visual tokens from position 16 on (a grid of the
    most square factorisation of ``V``) and ``S`` target tokens 10 from the end."""
    gen = torch.Generator(device=device).manual_seed(0)
    values = torch.randn(batch, layers, seq_len, heads, head_dim, device=device, dtype=dtype, generator=gen)
    first_visual = 16
    visual_idx = torch.arange(first_visual, first_visual + num_visual, device=device).expand(batch, -1).contiguous()
    target_idx = torch.arange(seq_len - 10, seq_len - 10 + num_targets, device=device).expand(batch, -1).contiguous()
    h = int(math.isqrt(num_visual))
    while num_visual % h:
        h -= 1
    grid_hw = torch.tensor([[h, num_visual // h]] * batch, device=device)
    return values, target_idx, visual_idx, grid_hw


def copy_bandwidth_gbs(num_bytes=2 << 30):
    """Device-to-device copy bandwidth, bytes read + written per second, in GB/s."""
    import triton.testing

    src = torch.empty(num_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return 2 * num_bytes / (ms * 1e-3) / 1e9
