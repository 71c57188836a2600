"""The relevance map (Sec. 3.2): torch path against the literal Fig. 7 oracle, the Triton kernel
against the torch path, a planted-object property, input errors, and torch.compile."""

import importlib.util

import pytest
import torch
from fig7 import U, fp32_error_bound, relevance_map_fig7

from focus_modules import RelevanceMap
from focus_modules.functional import relevance_map

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()


def make_batch(prompts, heads, head_dim, num_layers, seed, dtype=torch.float32, offset=0.3, device="cpu"):
    """A left-padded batch of prompts laid out as [padding | 2 text | visual h*w | text].

    Args:
        prompts: list of (grid_hw, num_targets, num_trailing_text) per prompt; prompts of
            different lengths give different N (left padding), V and grids in one batch.
        offset: added to the random values; real value vectors are far from zero-mean, and a
            positive mean keeps every row sum well away from zero (well-conditioned oracle).

    Returns:
        values [B, L, N, H, D], target_idx [B, S], visual_idx [B, V], grid_hw [B, 2], mask [B, N]
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = [2 + h * w + text for (h, w), _, text in prompts]
    seq_len = max(lengths)
    num_visual = max(h * w for (h, w), _, _ in prompts)
    num_targets = max(s for _, s, _ in prompts)
    batch = len(prompts)
    values = torch.randn(batch, num_layers, seq_len, heads, head_dim, generator=gen) + offset
    target_idx = torch.full((batch, num_targets), -1)
    visual_idx = torch.full((batch, num_visual), -1)
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    for b, ((h, w), s, _text) in enumerate(prompts):
        start = seq_len - lengths[b]
        mask[b, start:] = 1
        visual_idx[b, : h * w] = torch.arange(start + 2, start + 2 + h * w)
        text_pos = torch.arange(start + 2 + h * w, seq_len)
        chosen = text_pos[torch.randperm(len(text_pos), generator=gen)[:s]]
        # Padding in the middle of the target row too: targets need not be left-aligned.
        slots = torch.randperm(num_targets, generator=gen)[:s]
        target_idx[b, slots] = chosen
    grid_hw = torch.tensor([list(g) for g, _, _ in prompts])
    return (
        values.to(dtype).to(device),
        target_idx.to(device),
        visual_idx.to(device),
        grid_hw.to(device),
        mask.to(device),
    )


def assert_within(got, want, bound):
    """``|got - want| <= bound`` in every cell (float64 comparison), with the worst cell in the
    message."""
    excess = (got.double() - want.double()).abs() - bound
    worst = int(excess.flatten().argmax())
    assert float(excess.flatten()[worst]) <= 0, (
        f"cell {worst}: |got - want| = {float((got.double() - want.double()).abs().flatten()[worst]):.3e} "
        f"exceeds the fp32 bound {float(bound.flatten()[worst]):.3e}"
    )


# (heads, head_dim, layers, prompts): S = 1..6, L = 1..20, H = 1..8, non-square grids.
ORACLE_CASES = [
    (1, 16, 1, [((4, 4), 1, 3)]),
    (8, 32, 20, [((3, 7), 6, 9)]),
    (4, 24, 5, [((5, 3), 2, 4), ((2, 9), 4, 6), ((4, 4), 1, 2)]),
    (2, 64, 12, [((6, 2), 3, 5), ((3, 3), 5, 8)]),
    (3, 8, 3, [((1, 11), 2, 3), ((7, 1), 1, 2), ((2, 2), 3, 4), ((5, 5), 6, 7)]),
]


@pytest.mark.parametrize("heads,head_dim,num_layers,prompts", ORACLE_CASES)
def test_torch_path_matches_fig7_oracle(heads, head_dim, num_layers, prompts):
    values, target_idx, visual_idx, grid_hw, mask = make_batch(prompts, heads, head_dim, num_layers, seed=len(prompts))
    got = relevance_map(values, target_idx, visual_idx, grid_hw, mask, impl="torch")
    want = relevance_map_fig7(values, target_idx, visual_idx, grid_hw, mask)
    bound = fp32_error_bound(values, target_idx, visual_idx, grid_hw, mask)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert_within(got, want, bound)
    for b, (h, w) in enumerate(grid_hw.tolist()):
        # The cells' own bounds, plus the rounding of an h*w-term fp32 sum of values summing to ~1.
        tolerance = float(bound[b].sum()) + 2 * h * w * U
        assert got[b, :h, :w].sum().item() == pytest.approx(1.0, abs=tolerance)
        assert torch.count_nonzero(got[b]) == torch.count_nonzero(got[b, :h, :w])


def test_attention_mask_excludes_padding_from_row_sums():
    values, target_idx, visual_idx, grid_hw, mask = make_batch([((3, 4), 2, 5), ((2, 2), 2, 3)], 2, 8, 3, seed=3)
    assert int((mask == 0).sum()) > 0
    got = relevance_map(values, target_idx, visual_idx, grid_hw, mask, impl="torch")
    want = relevance_map_fig7(values, target_idx, visual_idx, grid_hw, mask)
    ignored_mask = relevance_map(values, target_idx, visual_idx, grid_hw, None, impl="torch")
    bound = fp32_error_bound(values, target_idx, visual_idx, grid_hw, mask)
    assert_within(got, want, bound)
    # Without the mask the padded prompt's row sums change by far more than rounding.
    assert bool(((ignored_mask[1].double() - want[1]).abs() > 10 * bound[1]).any())


def test_batched_equals_one_prompt_at_a_time():
    prompts = [((3, 5), 2, 4), ((4, 2), 3, 6), ((2, 2), 1, 2)]
    values, target_idx, visual_idx, grid_hw, mask = make_batch(prompts, 3, 16, 4, seed=5)
    batched = relevance_map(values, target_idx, visual_idx, grid_hw, mask, impl="torch")
    # Both compute the same exact map, each within the fp32 bound of it.
    bound = fp32_error_bound(values, target_idx, visual_idx, grid_hw, mask)
    for b, (h, w) in enumerate(grid_hw.tolist()):
        real = mask[b].bool()
        offset = int((~real).sum())
        single = relevance_map(
            values[b : b + 1, :, real],
            (target_idx[b : b + 1] - offset).clamp_min(-1),
            visual_idx[b : b + 1, : h * w] - offset,
            grid_hw[b : b + 1],
            impl="torch",
        )
        assert_within(batched[b, :h, :w], single[0], 2 * bound[b, :h, :w])


def test_consensus_is_the_renormalised_product_of_per_token_maps():
    values, target_idx, visual_idx, grid_hw, _ = make_batch([((4, 5), 3, 4)], 2, 8, 3, seed=11)
    # The per-token maps in float64 (the torch path computes in fp64 for fp64 input): their
    # renormalised product is the exact consensus the fp32 map must match within its bound.
    per_token = [
        relevance_map(values.double(), target_idx[:, [s]], visual_idx, grid_hw, impl="torch").double() for s in range(3)
    ]
    product = per_token[0] * per_token[1] * per_token[2]
    combined = relevance_map(values, target_idx, visual_idx, grid_hw, impl="torch")
    bound = fp32_error_bound(values, target_idx, visual_idx, grid_hw)
    assert_within(combined, product / product.sum(), bound)
    assert not torch.allclose(combined.double(), per_token[0], atol=float(10 * bound.max()))  # a real product


def test_planted_object_becomes_the_argmax_in_row_major_order():
    h, w, row, col = 6, 10, 1, 7
    values, target_idx, visual_idx, grid_hw, _ = make_batch([((h, w), 2, 4)], 4, 16, 6, seed=7, offset=0.0)
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(4, 16, generator=gen)
    for pos in target_idx[0].tolist():
        values[0, :, pos] = direction + 0.1 * torch.randn(values.shape[1], 4, 16, generator=gen)
    cluster = [(row + dr, col + dc) for dr in (0, 1) for dc in (0, 1)]
    for r, c in cluster:
        token = visual_idx[0, r * w + c]
        values[0, :, token] = direction + 0.3 * torch.randn(values.shape[1], 4, 16, generator=gen)
    got = relevance_map(values, target_idx, visual_idx, grid_hw, impl="torch")[0]
    peak = divmod(int(got.argmax()), w)
    assert peak in cluster
    # A column-major (transposed) layout of the same scores puts the peak outside the cluster.
    transposed = got.flatten().reshape(w, h).T
    assert divmod(int(transposed.argmax()), w) not in cluster


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda v, t, vi, g, m: (v[0], t, vi, g, m), r"values must be a float tensor \[B, L, N, H, D\]"),
        (lambda v, t, vi, g, m: (v, t[:1], vi, g, m), r"target_idx must be an integer tensor \[B=2"),
        (lambda v, t, vi, g, m: (v, t, vi, g[:, :1], m), r"grid_hw must have shape \[B=2, 2\], got \(2, 1\)"),
        (lambda v, t, vi, g, m: (v, t, vi, g.flip(1) + 1, m), r"prompt 0: grid_hw = \(5, 4\) needs h\*w = 20"),
        (lambda v, t, vi, g, m: (v, t.fill_(-1), vi, g, m), r"prompt 0 has an empty target set"),
        (lambda v, t, vi, g, m: (v, t[:, :0], vi, g, m), r"has no target tokens"),
        (
            lambda v, t, vi, g, m: (v, t.index_fill_(1, torch.tensor([0]), 99), vi, g, m),
            r"target_idx\[0, 0\] = 99 lies outside the sequence of length N=",
        ),
        (lambda v, t, vi, g, m: (v, t, vi, g, m[:, 1:]), r"attention_mask must have shape \[B=2, N="),
        (lambda v, t, vi, g, m: (v, t, vi.roll(1, dims=1), g, m), r"padding \(-1\) must be trailing"),
    ],
)
def test_clear_errors(mutate, match):
    batch = make_batch([((3, 4), 2, 3), ((2, 3), 1, 3)], 2, 8, 2, seed=0)
    with pytest.raises(ValueError, match=match):
        relevance_map(*mutate(*(x.clone() for x in batch)), impl="torch")


def test_target_on_a_padding_token_is_an_error():
    values, target_idx, visual_idx, grid_hw, mask = make_batch([((3, 4), 1, 3), ((2, 2), 1, 3)], 2, 8, 2, seed=0)
    target_idx[1, 0] = 0  # prompt 1 is left-padded, so position 0 is padding
    with pytest.raises(ValueError, match=r"target_idx\[1, 0\] = 0 points at a padding token"):
        relevance_map(values, target_idx, visual_idx, grid_hw, mask)


def test_zero_row_sum_is_guarded_not_nan():
    values, target_idx, visual_idx, grid_hw, _ = make_batch([((2, 2), 1, 2)], 1, 4, 1, seed=0)
    values.zero_()  # every cosine is 0: row sums are 1/2 from the identity, visual columns 0
    got = relevance_map(values, target_idx, visual_idx, grid_hw, impl="torch")
    want = relevance_map_fig7(values, target_idx, visual_idx, grid_hw)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want)


def test_module_and_torch_compile_match_eager():
    batch = make_batch([((3, 5), 2, 4), ((4, 2), 3, 6)], 2, 16, 3, seed=2)
    module = RelevanceMap(impl="torch")
    eager = module(*batch)
    compiled = torch.compile(module, backend="inductor")(*batch)
    # Fused kernels sum in another order: both lie within the fp32 bound of the exact map.
    assert_within(compiled, eager, 2 * fp32_error_bound(*batch))
    assert "impl='torch'" in repr(module)
    with pytest.raises(ValueError, match="impl must be one of"):
        RelevanceMap(impl="cuda")


def test_auto_uses_torch_on_cpu_and_triton_needs_cuda_or_interpreter(monkeypatch):
    batch = make_batch([((3, 3), 1, 2)], 1, 8, 1, seed=0)
    torch.testing.assert_close(relevance_map(*batch, impl="auto"), relevance_map(*batch, impl="torch"))
    if HAS_TRITON and not HAS_CUDA:
        from focus_modules.kernels import relevance_map as kernel

        monkeypatch.setattr(kernel, "INTERPRET", False)
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            relevance_map(*batch, impl="triton")


# Odd sizes on purpose: head_dim not a power of two, N not a multiple of the kernel's tile,
# several prompts with different N (left padding), V and grids, padded target slots.
KERNEL_CASES = [
    (3, 24, 4, [((3, 5), 2, 7), ((4, 3), 3, 30), ((2, 2), 1, 3)]),
    (1, 16, 1, [((1, 1), 1, 1)]),
    (2, 40, 3, [((9, 8), 5, 6), ((3, 11), 6, 8)]),
]


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
@pytest.mark.skipif(
    not HAS_CUDA and __import__("os").environ.get("TRITON_INTERPRET") != "1", reason="needs CUDA or TRITON_INTERPRET=1"
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] + ([torch.bfloat16] if HAS_CUDA else []))
@pytest.mark.parametrize("heads,head_dim,num_layers,prompts", KERNEL_CASES)
def test_triton_kernel_matches_torch_path(dtype, heads, head_dim, num_layers, prompts):
    device = "cuda" if HAS_CUDA else "cpu"
    batch = make_batch(prompts, heads, head_dim, num_layers, seed=heads + num_layers, dtype=dtype, device=device)
    got = relevance_map(*batch, impl="triton")
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    # Low-precision inputs are exact in float64: the oracle on them is the exact map, and the
    # kernel's fp32 math must land within the fp32 bound of it, like the torch path.
    exact = relevance_map_fig7(*batch)
    assert_within(got, exact, fp32_error_bound(*batch))
    without_mask = batch[:4]
    assert_within(
        relevance_map(*without_mask, impl="triton"), relevance_map_fig7(*without_mask), fp32_error_bound(*without_mask)
    )


@pytest.mark.skipif(not (HAS_TRITON and HAS_CUDA), reason="torch.compile of the Triton op needs CUDA")
def test_triton_op_under_torch_compile_matches_eager():
    batch = make_batch([((24, 24), 3, 20), ((16, 30), 2, 10)], 8, 128, 6, seed=4, dtype=torch.bfloat16, device="cuda")
    module = RelevanceMap(impl="triton")
    eager = module(*batch)
    compiled = torch.compile(module)(*batch)
    bound = fp32_error_bound(*batch)
    assert_within(compiled, eager, 2 * bound)
    assert_within(eager, relevance_map(*batch, impl="torch"), 2 * bound)
