"""Sweep the relevance-map kernels' tile sizes and warps on the benchmark shapes (CUDA only).

    python benchmarks/tune_relevance_kernel.py

Each configuration is passed to the launcher as arguments; the fastest ones become the
launcher's defaults (``focus_modules.kernels.relevance_map.relevance_scores_triton``).
"""

import functools
import itertools

import triton.testing
from relevance_inputs import SHAPES, copy_bandwidth_gbs, make_inputs  # beside this script

from focus_modules.kernels.relevance_map import relevance_scores_triton
from focus_modules.ops.relevance_map import DENOMINATOR_EPS, NORM_EPS, relevance_scores_torch

SWEEP = dict(block_n=(16, 32, 64), rows_warps=(4, 8, 16), block_v=(512, 1024, 2048), rollout_warps=(4, 8))


def main():
    copy = copy_bandwidth_gbs()
    print(f"copy bandwidth {copy:.0f} GB/s")
    for name in SHAPES:
        values, target_idx, visual_idx, _ = make_inputs(*SHAPES[name])
        value_bytes = values.numel() * values.element_size()
        ref = relevance_scores_torch(values, target_idx, visual_idx)
        results = []
        for combo in itertools.product(*SWEEP.values()):
            tiles = dict(zip(SWEEP, combo))
            fn = functools.partial(
                relevance_scores_triton,
                values,
                target_idx,
                visual_idx,
                norm_eps=NORM_EPS,
                denominator_eps=DENOMINATOR_EPS,
                **tiles,
            )
            err = ((fn() - ref).norm() / ref.norm()).item()
            ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            results.append((ms, tiles, err))
        results.sort(key=lambda r: r[0])
        for ms, tiles, err in results[:3]:
            gbs = value_bytes / (ms * 1e-3) / 1e9
            print(f"{name:14s} {ms * 1e3:8.1f} us {gbs:6.0f} GB/s ({gbs / copy:.2f} of copy) err {err:.1e} {tiles}")


if __name__ == "__main__":
    main()
