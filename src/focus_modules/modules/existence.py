"""``ExistenceScorer``: Eq. 5's existence confidence as an ``nn.Module``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from focus_modules.ops.existence import existence_confidence


class ExistenceScorer(nn.Module):
    """Holds the Yes/No token ids of a tokenizer and scores next-token logits (Eq. 5);
    see :func:`focus_modules.functional.existence_confidence`.

    Args:
        yes_ids: token ids that spell "Yes".
        no_ids: token ids that spell "No".

    Example:
        >>> import torch
        >>> scorer = ExistenceScorer(yes_ids=[5], no_ids=[6])
        >>> logits = torch.zeros(2, 10)  # next-token logits [B, vocab]
        >>> logits[0, 5] = logits[1, 6] = 3.0  # the first prompt leans to "Yes", the second to "No"
        >>> scorer(logits)  # [B] in [-1, 1]
        tensor([ 0.9051, -0.9051])
    """

    def __init__(self, yes_ids: Sequence[int], no_ids: Sequence[int]) -> None:
        super().__init__()
        self.yes_ids = tuple(int(i) for i in yes_ids)
        self.no_ids = tuple(int(i) for i in no_ids)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"need at least one Yes and one No id, got yes_ids={self.yes_ids}, no_ids={self.no_ids}")

    def forward(self, logits: Tensor) -> Tensor:
        """``[B, V]`` last-position logits -> ``[B]`` confidence in ``[-1, 1]``."""
        return existence_confidence(logits, self.yes_ids, self.no_ids)

    def extra_repr(self) -> str:
        return f"yes_ids={self.yes_ids}, no_ids={self.no_ids}"
