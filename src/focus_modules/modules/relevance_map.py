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
        >>> rel = RelevanceMap()
        >>> maps = rel(values, target_idx, visual_idx, grid_hw)  # [B, Hmax, Wmax]
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
