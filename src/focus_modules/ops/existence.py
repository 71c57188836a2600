"""Existence confidence from Yes/No next-token logits (Eq. 5, Sec. A.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def existence_confidence(logits: Tensor, yes_ids: Sequence[int] | Tensor, no_ids: Sequence[int] | Tensor) -> Tensor:
    """Confidence that the answer to an existence prompt is "Yes".

    ``c_yes = 2 * (softmax([l_yes, l_no])[yes] - 0.5)`` (Eq. 5), where ``l_yes`` and ``l_no``
    are the log-sum-exp of the logits of every token id that spells "Yes" (resp. "No") — a
    tokenizer can have several (``Yes``, ``▁Yes``, ``ĠYes``). ``2 * sigmoid(x) - 1 = tanh(x/2)``
    gives the same value without forming the softmax.

    Args:
        logits: ``[B, V]`` next-token logits at the last position of each prompt; any float
            dtype, math in fp32.
        yes_ids: token ids that spell "Yes" (at least one).
        no_ids: token ids that spell "No" (at least one, disjoint from ``yes_ids``).

    Returns:
        ``[B]`` float32 in ``[-1, 1]``; positive means the model prefers "Yes"
        (``l_yes > l_no``).
    """
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor [B, V], got {logits.dtype} {tuple(logits.shape)}")
    vocab = logits.shape[1]
    yes = _as_ids(yes_ids, "yes_ids", vocab, logits.device)
    no = _as_ids(no_ids, "no_ids", vocab, logits.device)
    if bool(torch.isin(yes, no).any()):
        raise ValueError(f"yes_ids {yes.tolist()} and no_ids {no.tolist()} share token ids")
    logits = logits.float()
    l_yes = logits.index_select(1, yes).logsumexp(1)
    l_no = logits.index_select(1, no).logsumexp(1)
    return torch.tanh((l_yes - l_no) / 2)


def _as_ids(ids: Sequence[int] | Tensor, name: str, vocab: int, device: torch.device) -> Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long, device=device).flatten()
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty: need at least one token id")
    if bool(((ids < 0) | (ids >= vocab)).any()):
        raise ValueError(f"{name} {ids.tolist()} has ids outside the vocabulary of size V={vocab}")
    return ids
