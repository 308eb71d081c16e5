"""Generation in an engine group whose engine runs from the group's first rank (SGLang with tensor_parallel_size
k > 1, colocated): the first rank generates, and the group's other ranks, which train parts of the same shard,
receive the responses from it.

(An engine that runs on every rank of its group, vLLM's external_launcher, needs nothing here: each rank is
given the same prompts and gets the same responses.)
"""

from __future__ import annotations

from typing import Any, Sequence

from rlkit.batch import Batch
from rlkit.distributed import broadcast_object
from rlkit.experience.generation import Generation, PromptItem
from rlkit.rollout.base import SamplingParams


class LeaderGeneration:
    """A Generation for every rank of an engine group: `inner` on the group's first rank (None elsewhere), its
    Batch broadcast to the group.

    Args:
        inner: the first rank's generation; None on the other ranks.
        leader: the first rank (a rank of the job).
        group: the engine group's process group.
    """

    def __init__(self, inner: Generation | None, leader: int, group: Any):
        self.inner = inner
        self.leader = leader
        self.group = group

    def __call__(self, prompts: Sequence[PromptItem], params: SamplingParams) -> Batch:
        batch = self.inner(prompts, params) if self.inner is not None else None
        return broadcast_object(batch, src=self.leader, group=self.group)
