"""Value capture for the relevance pass, encoding each image once per question.

The existence prompt puts the image before the target's text, so under the causal mask every
token up to the first token that differs between two targets' prompts -- the chat preamble and
the whole image block included -- has the same hidden states, keys and values for every target
of a question. :func:`capture_existence_values` therefore runs, per question with two or more
targets, one *prefix* pass over the shared tokens (with the image) that fills a KV cache, and
then one short *suffix* pass per target (the target and the rest of the prompt, no image) on
its own copy of that cache. The values of the prefix and of each suffix are assembled into the
``[P, L, N, H, D]`` tensor that one full pass per prompt would have produced (up to floating-
point rounding), in the same left-padded layout as :meth:`ModelAdapter.collate`, so the maps
are computed exactly as before.

Questions with one target (nothing to share), and prompts whose shared prefix would stop
before the end of the image block, get one full pass, as without prefix reuse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from focus_modules.adapters.base import Encoding, ModelAdapter
from focus_modules.modules.value_capture import ValueCapture


@dataclass
class CapturedValues:
    """Values of the existence prompts, laid out as if they had been collated.

    Attributes:
        values: ``[P, L, N, H, D]`` values of the selected layers; prompt ``p``'s tokens sit at
            ``offsets[p]..N-1`` (left padding in front, undefined values there).
        attention_mask: ``[P, N]`` long, 1 on each prompt's own tokens.
        offsets: per prompt, the padding in front of it.
        passes: per question (in order of first appearance in ``owners``), the forward passes
            spent: 1 per full pass; 1 prefix pass + 1 per target with prefix reuse.
        tokens: per question, the tokens the model processed for it (prompt tokens, no padding).
    """

    values: Tensor
    attention_mask: Tensor
    offsets: list[int]
    passes: list[int]
    tokens: list[int]


def shared_prefix_length(encodings: Sequence[Encoding]) -> int:
    """Number of leading tokens all ``encodings`` share that precede every target token: the
    longest common prefix of their ``input_ids``, cut at the first target position."""
    shortest = min(e.input_ids.numel() for e in encodings)
    first = encodings[0].input_ids[:shortest]
    same = torch.ones(shortest, dtype=torch.bool)
    for enc in encodings[1:]:
        same &= enc.input_ids[:shortest] == first
    length = int(same.long().cumprod(0).sum())
    return min([length] + [int(e.target_positions.min()) for e in encodings if e.target_positions.numel()])


def _same_model_inputs(encodings: Sequence[Encoding]) -> bool:
    first = encodings[0].model_inputs
    return all(
        e.model_inputs.keys() == first.keys()
        and all(e.model_inputs[k].shape == v.shape and torch.equal(e.model_inputs[k], v) for k, v in first.items())
        for e in encodings[1:]
    )


def capture_existence_values(
    adapter: ModelAdapter,
    capture: ValueCapture,
    encodings: Sequence[Encoding],
    owners: Sequence[int],
    reuse_prefix: bool = True,
) -> CapturedValues:
    """Run the existence prompts and collect the values of ``capture``'s layers.

    Args:
        adapter: the model's adapter (its ``collate`` and model calls are used).
        capture: an active :class:`ValueCapture` on the model (its context entered).
        encodings: ``P`` existence prompts (:meth:`ModelAdapter.encode_existence`).
        owners: per prompt, the question it belongs to (any hashable id). Prompts of one
            question share a prefix only where their tokens and image inputs are equal.
        reuse_prefix: encode the shared prefix once per question (see the module docstring);
            ``False`` runs one full pass per prompt.

    Returns:
        :class:`CapturedValues` in the layout of ``adapter.collate(encodings)``.
    """
    if len(encodings) != len(owners) or not encodings:
        raise ValueError(f"need one owner per encoding, got {len(owners)} owners for {len(encodings)} encodings")
    lengths = [e.input_ids.numel() for e in encodings]
    seq_len = max(lengths)
    offsets = [seq_len - n for n in lengths]
    mask = torch.zeros((len(encodings), seq_len), dtype=torch.long)
    for p, offset in enumerate(offsets):
        mask[p, offset:] = 1
    questions = list(dict.fromkeys(owners))
    prompts_of = {q: [p for p, o in enumerate(owners) if o == q] for q in questions}
    prefix_of: dict[object, int] = {}  # question -> shared prefix length
    if reuse_prefix:
        for q, prompts in prompts_of.items():
            if len(prompts) < 2:
                continue
            group = [encodings[p] for p in prompts]
            length = shared_prefix_length(group)
            last_visual = max(int(e.visual_positions.max()) for e in group)
            # the image block must lie in the shared prefix, and its pixels must be the same
            if length > last_visual and _same_model_inputs(group):
                prefix_of[q] = length
    passes = {q: 0 for q in questions}
    tokens = {q: 0 for q in questions}
    out: dict[str, Tensor] = {}

    def store(prompt: int, start: int, values: Tensor) -> None:
        """Write ``values`` ``[L, n, H*D]`` at positions ``start..start+n-1`` of ``prompt``."""
        if "values" not in out:
            out["values"] = values.new_zeros((len(encodings), values.shape[0], seq_len, values.shape[-1]))
        begin = offsets[prompt] + start
        out["values"][prompt, :, begin : begin + values.shape[1]] = values

    full = [p for p, o in enumerate(owners) if o not in prefix_of]
    if full:
        batch = adapter.collate([encodings[p] for p in full])
        adapter.last_logits(batch)
        raw = capture.raw_values
        for row, p in enumerate(full):
            store(p, 0, raw[row, :, batch.offsets[row] :])
            passes[owners[p]] += 1
            tokens[owners[p]] += lengths[p]
    shared = [q for q in questions if q in prefix_of]
    if shared:
        _prefix_and_suffixes(adapter, capture, encodings, shared, prompts_of, prefix_of, store)
        for q in shared:
            passes[q] += 1 + len(prompts_of[q])
            tokens[q] += sum(lengths[p] for p in prompts_of[q]) - (len(prompts_of[q]) - 1) * prefix_of[q]
    values = out["values"]
    batch_size, num_layers, _, width = values.shape
    head_dim = capture.head_dim
    return CapturedValues(
        values.view(batch_size, num_layers, seq_len, width // head_dim, head_dim),
        mask.to(values.device),
        offsets,
        [passes[q] for q in questions],
        [tokens[q] for q in questions],
    )


def _prefix_and_suffixes(adapter, capture, encodings, shared, prompts_of, prefix_of, store) -> None:
    """One batched prefix pass (one row per question) that fills a KV cache, then one batched
    pass over every prompt's suffix on the rows of that cache copied per prompt."""
    from transformers import DynamicCache

    prefixes = []
    for q in shared:
        first, length = encodings[prompts_of[q][0]], prefix_of[q]
        prefixes.append(
            dataclasses.replace(
                first,
                input_ids=first.input_ids[:length],
                token_inputs={k: v[:length] for k, v in first.token_inputs.items()},
            )
        )
    prefix_batch = adapter.collate(prefixes)
    cache = DynamicCache()
    adapter.forward_on_cache(prefix_batch.inputs, cache)
    raw = capture.raw_values
    rows, suffix_prompts = [], []
    for row, q in enumerate(shared):
        for p in prompts_of[q]:
            store(p, 0, raw[row, :, prefix_batch.offsets[row] :])
            rows.append(row)
            suffix_prompts.append(p)
    # Suffixes are right-padded: under the causal mask padding at the end changes nothing
    # before it, and the real tokens keep consecutive positions after the prefix.
    suffixes = [encodings[p].input_ids[prefix_of[shared[row]] :] for row, p in zip(rows, suffix_prompts)]
    width = adapter.bucketed(max(s.numel() for s in suffixes))
    ids = torch.full((len(suffixes), width), adapter.pad_token_id, dtype=torch.long)
    suffix_mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, : s.numel()] = s
        suffix_mask[i, : s.numel()] = 1
    device = prefix_batch.inputs["input_ids"].device
    rows_t = torch.tensor(rows, dtype=torch.long, device=device)
    # a copy of the prefix's cache row for every prompt; CPU indices serve cache layers on any
    # device (a model split with device_map)
    cache.batch_select_indices(torch.tensor(rows, dtype=torch.long))
    inputs = {
        "input_ids": ids.to(device),
        "attention_mask": torch.cat([prefix_batch.inputs["attention_mask"][rows_t], suffix_mask.to(device)], 1),
    }
    position_ids = adapter.suffix_position_ids(prefix_batch, rows_t, width)
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    adapter.forward_on_cache(inputs, cache)
    raw = capture.raw_values
    for i, (row, p) in enumerate(zip(rows, suffix_prompts)):
        store(p, prefix_of[shared[row]], raw[i, :, : suffixes[i].numel()])
