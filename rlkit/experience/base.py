"""What the experience stage hands the trainer, and the interface every experience source has.

Shape legend: B responses (rows) on this rank, T response width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from torch import Tensor

from rlkit.batch import Batch

# The policy's full weights in Hugging Face names, one tensor at a time: TrainEngine.full_weights, a collective
# that every training rank iterates in step. A function, not an iterator: a source may need them more than once
# (a rollout engine that drops its weights while asleep takes them again at every wake).
WeightsFn = Callable[[], Iterable[tuple[str, Tensor]]]


@dataclass
class Experience:
    """One training step's scored responses on this rank.

    batch: the rlkit.batch layout (input_ids, attention_mask, position_ids, response_mask, rollout_logprobs when
        the engine returns them, and the meta lists), plus `reward_baselines` (B,) for an estimator that needs
        them (ReMax) and the meta list `policy_version`: per response, the version of the weights that
        generated it (see ExperienceSource.publish).
    scores: (B,) outcome rewards, before any shaping (the trainer adds the overlong penalty).
    metrics: reward and response-length statistics over every rank, reward extras, dynamic-sampling counts.
    """

    batch: Batch
    scores: Tensor
    metrics: dict[str, float]

    @property
    def policy_version(self) -> int:
        """The oldest policy version among the responses (all equal in a synchronous source)."""
        return min(self.batch["policy_version"])


@runtime_checkable
class ExperienceSource(Protocol):
    """Produces the trainer's experience and keeps the rollout engine on the current policy.

    The trainer's loop is next_batch -> prepare -> update -> publish, so a source knows the policy only through
    publish. Every method is called on every rank (they may run collectives).
    """

    def next_batch(self) -> Experience:
        """The next training step's experience: the next prompts of the seeded order, responses, rewards."""
        ...

    def publish(self, weights: WeightsFn, version: int) -> None:
        """The policy is now `weights()`, trained by `version` steps (0: the initial weights). Responses
        generated from then on carry `version`; when the rollout engine takes the weights is the source's
        business (a colocated source at its next wake, a separate rollout group at once)."""
        ...

    def validate(self) -> dict[str, float]:
        """Responses to every validation prompt under the current policy, scored: `val/...` metrics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume exactly (JSON-serialisable)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    def close(self) -> None:
        """Shut the rollout engine down; the source cannot be used afterwards."""
        ...
