"""Turn a rollout engine's completions into the Batch the rest of the step works on.

Shape legend: B completions, P prompt width (left-padded), T response width (right-padded), L = P + T.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rlkit.batch import Batch
from rlkit.rollout.base import Completion


def completions_to_batch(
    completions: Sequence[Completion],
    *,
    pad_token_id: int,
    max_prompt_length: int,
    max_response_length: int,
    group_index: Sequence[int],
    meta: dict[str, Sequence[Any]],
) -> Batch:
    """Pack completions into a Batch of width P + T, never truncating.

    Args:
        completions: B completions (prompt-major, as engines return them).
        pad_token_id: fills the left of each prompt and the right of each response.
        max_prompt_length: P, at least the longest prompt (the trainer passes the longest in the batch).
        max_response_length: T, at least the longest response (the trainer passes max_new_tokens).
        group_index: B ints, the prompt each completion answers (completions of one prompt share it).
        meta: per-sample lists of length B (data_source, ground_truth, prompt_text, ...), kept as given.

    Returns a Batch with tensors input_ids, attention_mask, position_ids (B, L) long, response_mask (B, T)
    float, rollout_logprobs (B, T) float (0 at padding; only when every completion has log-probs), and meta
    = `meta` + group_index, response_text, finish_reason, response_length (int).
    """
    num = len(completions)
    width_p, width_t = max_prompt_length, max_response_length
    assert len(group_index) == num, f"group_index has {len(group_index)} entries for {num} completions"
    for key, values in meta.items():
        assert len(values) == num, f"meta['{key}'] has {len(values)} entries for {num} completions"

    input_ids_BL = torch.full((num, width_p + width_t), pad_token_id, dtype=torch.long)
    attention_mask_BL = torch.zeros((num, width_p + width_t), dtype=torch.long)
    with_logprobs = num > 0 and all(completion.logprobs is not None for completion in completions)
    rollout_logprobs_BT = torch.zeros((num, width_t), dtype=torch.float32)
    for i, completion in enumerate(completions):
        prompt, response = completion.prompt_ids, completion.response_ids
        assert len(prompt) <= width_p, f"completion {i}: prompt of {len(prompt)} tokens > width {width_p}"
        assert len(response) <= width_t, f"completion {i}: response of {len(response)} tokens > width {width_t}"
        input_ids_BL[i, width_p - len(prompt) : width_p] = torch.tensor(prompt, dtype=torch.long)
        input_ids_BL[i, width_p : width_p + len(response)] = torch.tensor(response, dtype=torch.long)
        attention_mask_BL[i, width_p - len(prompt) : width_p + len(response)] = 1
        if with_logprobs:
            assert len(completion.logprobs) == len(response), f"completion {i}: log-probs and tokens differ in length"
            rollout_logprobs_BT[i, : len(response)] = torch.tensor(completion.logprobs, dtype=torch.float32)

    # Left padding sits at position 0, right padding repeats the last real position.
    position_ids_BL = (attention_mask_BL.cumsum(dim=1) - 1).clamp(min=0)
    tensors = {
        "input_ids": input_ids_BL,
        "attention_mask": attention_mask_BL,
        "position_ids": position_ids_BL,
        "response_mask": attention_mask_BL[:, width_p:].float(),
    }
    if with_logprobs:
        tensors["rollout_logprobs"] = rollout_logprobs_BT

    added = {
        "group_index": [int(index) for index in group_index],
        "response_text": [completion.text for completion in completions],
        "finish_reason": [completion.finish_reason for completion in completions],
        "response_length": [len(completion.response_ids) for completion in completions],
    }
    clash = sorted(set(added) & set(meta))
    assert not clash, f"meta already has {clash}; completions_to_batch sets these itself"
    return Batch(tensors, {**{key: list(values) for key, values in meta.items()}, **added})
