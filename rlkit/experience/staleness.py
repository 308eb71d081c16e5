"""How old a response is when it trains, and what becomes of one older than placement.staleness allows.

A response carries the version of the weights that generated it (`batch["policy_version"]`); the update it
joins starts from the last published version. Its *age* is the difference: 0 in a synchronous run, up to k with
placement.staleness = k (batch t is generated with version t-1-k and trains from version t-1). A split job's
rollout ranks never run further ahead than that, so ages above k mean something went wrong upstream (a plugin
source, a bug); `drop_stale` is the guard: it drops the whole group of any such response (a group-relative
estimator needs whole groups). With placement.on_stale=reweight nothing is dropped, and algorithm.rollout_is_cap
weights every response by min(pi_old / pi_rollout, cap), the truncated importance ratio between the policy
being updated and the one that sampled it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlkit.batch import Batch


def response_ages(versions: Sequence[int], current: int) -> list[int]:
    """Each response's age: `current` (the version the update starts from) minus the version that generated it."""
    return [current - version for version in versions]


def stale_groups(versions: Sequence[int], group_index: Sequence[int], current: int, max_age: int) -> set[int]:
    """The groups with at least one response older than `max_age` versions."""
    return {group for group, age in zip(group_index, response_ages(versions, current)) if age > max_age}


def drop_stale(batch: Batch, scores: torch.Tensor, current: int, max_age: int) -> tuple[Batch, torch.Tensor, int]:
    """`batch` and `scores` without the groups that hold a response older than `max_age`; and how many responses
    were dropped."""
    stale = stale_groups(batch["policy_version"], batch["group_index"], current, max_age)
    if not stale:
        return batch, scores, 0
    keep = [row for row, group in enumerate(batch["group_index"]) if group not in stale]
    return batch.select(keep), scores[keep], len(batch) - len(keep)
