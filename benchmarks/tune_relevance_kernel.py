"""Sweep the relevance-map kernels' tile sizes and warps on the benchmark shapes (CUDA only).

    python benchmarks/tune_relevance_kernel.py
"""

import itertools
import sys
from pathlib import Path

import torch
import triton.testing

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]
import focus_modules.kernels.relevance_map as kernel  # noqa: E402
from focus_modules.ops.relevance_map import relevance_scores_torch  # noqa: E402
from test_bench_relevance_map import SHAPES, copy_bandwidth_gbs, make_inputs  # noqa: E402

SWEEP = dict(BLOCK_N=(16, 32, 64), ROWS_WARPS=(4, 8, 16), BLOCK_V=(512, 1024, 2048), ROLLOUT_WARPS=(4, 8))


def main():
    copy = copy_bandwidth_gbs()
    print(f"copy bandwidth {copy:.0f} GB/s")
    for name in SHAPES:
        values, target_idx, visual_idx, _ = make_inputs(*SHAPES[name])
        value_bytes = values.numel() * values.element_size()
        ref = relevance_scores_torch(values, target_idx, visual_idx)
        results = []
        for combo in itertools.product(*SWEEP.values()):
            for key, value in zip(SWEEP, combo):
                setattr(kernel, key, value)
            fn = lambda: kernel.relevance_scores_triton(values, target_idx, visual_idx)  # noqa: E731
            err = ((fn() - ref).norm() / ref.norm()).item()
            ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            results.append((ms, dict(zip(SWEEP, combo)), err))
        results.sort(key=lambda r: r[0])
        for ms, combo, err in results[:3]:
            gbs = value_bytes / (ms * 1e-3) / 1e9
            print(f"{name:14s} {ms * 1e3:8.1f} us {gbs:6.0f} GB/s ({gbs / copy:.2f} of copy) err {err:.1e} {combo}")


if __name__ == "__main__":
    main()
