"""Relevance-map microbenchmarks on the paper's model shapes: the fused Triton kernel, the torch
path and the dense Fig. 7 code (N x N per layer), in bf16 on CUDA.

Effective bandwidth = bytes of value vectors read / median time (CUDA events,
``triton.testing.do_bench``), next to the device's measured copy bandwidth (bytes read +
written by a device-to-device copy). Run: ``python -m pytest benchmarks --benchmark-json=OUT.json``.
"""

import math

import pytest
import torch
from fig7 import relevance_map_fig7

from focus_modules.ops.relevance_map import relevance_scores

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU benchmarks need CUDA")

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


@pytest.fixture(scope="module")
def copy_gbs():
    return copy_bandwidth_gbs()


@pytest.mark.parametrize("impl", ["triton", "torch", "dense_fig7"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_relevance_map(benchmark, cuda_timed, copy_gbs, shape, impl):
    import triton.testing

    if impl == "dense_fig7" and shape == "onevision_b8":
        pytest.skip("dense N x N reference for 8 x 7 x 7400^2: ~12 GB of fp32, minutes per call")
    values, target_idx, visual_idx, grid_hw = make_inputs(*SHAPES[shape])
    if impl == "dense_fig7":
        fn = lambda: relevance_map_fig7(values, target_idx, visual_idx, grid_hw, dtype=torch.float32)  # noqa: E731
    else:
        fn = lambda: relevance_scores(values, target_idx, visual_idx, impl=impl)  # noqa: E731
    fn()
    ms = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    value_bytes = values.numel() * values.element_size()
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name(),
        shape=dict(zip("B L N H D S V".split(), SHAPES[shape])),
        dtype="bfloat16",
        median_ms_cuda_events=ms,
        effective_gbs=value_bytes / (ms * 1e-3) / 1e9,
        copy_gbs=copy_gbs,
        fraction_of_copy_bandwidth=value_bytes / (ms * 1e-3) / 1e9 / copy_gbs,
    )
    benchmark.pedantic(cuda_timed(fn), rounds=20 if impl == "dense_fig7" else 100, warmup_rounds=3)
