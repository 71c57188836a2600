"""Relevance-map microbenchmarks on the paper's model shapes: the fused Triton kernel, the torch
path and the dense Fig. 7 code (N x N per layer), in bf16 on CUDA.

Effective bandwidth = bytes of value vectors read / median time (CUDA events,
``triton.testing.do_bench``), next to the device's measured copy bandwidth (bytes read +
written by a device-to-device copy). Run: ``python -m pytest benchmarks --benchmark-json=OUT.json``.
"""

import pytest
import torch
from fig7 import relevance_map_fig7
from relevance_inputs import SHAPES, copy_bandwidth_gbs, make_inputs

from focus_modules.ops.relevance_map import relevance_scores

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU benchmarks need CUDA")


@pytest.fixture(scope="module")
def copy_gbs():
    return copy_bandwidth_gbs()


@pytest.mark.parametrize("impl", ["triton", "torch", "dense_fig7"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_relevance_map(benchmark, cuda_timed, copy_gbs, shape, impl):
    import triton.testing

    if impl == "dense_fig7" and shape in ("onevision_b8", "qwen2_5_vl_b8"):
        pytest.skip("dense N x N reference for 8 prompts of 7-14 layers x 7-11k tokens: minutes per call")
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
