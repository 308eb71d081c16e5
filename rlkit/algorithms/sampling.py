"""DAPO (Yu et al. 2025) batch shaping: dynamic sampling and the soft overlong punishment.

Shape legend: B = responses in the batch.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlkit.algorithms.advantages import group_ids


def keep_groups_with_signal(scores: torch.Tensor, group_index: Sequence) -> torch.Tensor:
    """DAPO dynamic sampling: drop every response of a group whose scores are all equal.

    Such a group has zero group-relative advantage everywhere and so no gradient. A group of one is
    kept (as in the DAPO reference code): a lone response keeps its raw score as its advantage.

    Args:
        scores: (B,) one score per response.
        group_index: length B; responses to one prompt share a value.

    Returns:
        (B,) bool, True for the responses to keep.
    """
    ids = group_ids(group_index, scores.shape[0]).to(scores.device)  # (B,)
    num_groups = int(ids.max()) + 1 if ids.numel() else 0
    group_max = torch.full((num_groups,), -torch.inf, dtype=scores.dtype, device=scores.device)
    group_min = torch.full((num_groups,), torch.inf, dtype=scores.dtype, device=scores.device)
    group_max = group_max.scatter_reduce(0, ids, scores, reduce="amax")
    group_min = group_min.scatter_reduce(0, ids, scores, reduce="amin")
    group_size = torch.bincount(ids, minlength=num_groups)
    return (group_max[ids] > group_min[ids]) | (group_size[ids] == 1)


def overlong_penalty(
    response_lengths: torch.Tensor, max_response_length: int, buffer_length: int, penalty_factor: float
) -> torch.Tensor:
    """DAPO soft overlong punishment, added to each response's reward.

    0 up to ``max_response_length - buffer_length`` tokens, then falling linearly to
    ``-penalty_factor`` at ``max_response_length``, and never below it.

    Args:
        response_lengths: (B,) number of response tokens.

    Returns:
        (B,) float penalties (<= 0).
    """
    if not 0 < buffer_length <= max_response_length:
        raise ValueError(
            f"buffer_length must be in (0, max_response_length={max_response_length}], got {buffer_length}"
        )
    expected_length = max_response_length - buffer_length
    excess = (response_lengths.float() - expected_length).clamp(min=0)  # (B,)
    return (-excess / buffer_length * penalty_factor).clamp(min=-penalty_factor)
