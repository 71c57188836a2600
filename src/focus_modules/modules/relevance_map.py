"""``RelevanceMap``: the object relevance map as an ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from focus_modules.ops.relevance_map import IMPLS, relevance_map


class RelevanceMap(nn.Module):
    """Object relevance maps from value vectors (Sec. 3.2); see
    :func:`focus_modules.functional.relevance_map` for shapes and semantics.

    Args:
        impl: ``"auto"``, ``"triton"`` or ``"torch"``.

    Example:
        >>> import torch
        >>> values = torch.randn(2, 3, 12, 2, 8)  # [B, layers, tokens, kv heads, head dim]
        >>> target_idx = torch.tensor([[10, 11], [10, -1]])  # [B, S] target tokens, -1 pads
        >>> visual_idx = torch.tensor([list(range(9)), list(range(6)) + [-1] * 3])  # [B, V] row-major
        >>> grid_hw = torch.tensor([[3, 3], [2, 3]])  # each prompt's visual grid
        >>> RelevanceMap(impl="torch")(values, target_idx, visual_idx, grid_hw).shape  # [B, Hmax, Wmax]
        torch.Size([2, 3, 3])
    """

    def __init__(self, impl: str = "auto") -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl

    def forward(
        self,
        values: Tensor,
        target_idx: Tensor,
        visual_idx: Tensor,
        grid_hw: Tensor,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        return relevance_map(values, target_idx, visual_idx, grid_hw, attention_mask, impl=self.impl)

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"
