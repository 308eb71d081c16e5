"""The sections `rlkit eval` takes from `rlkit train`'s config: the rollout engine and the reward.

Its flags (--rollout, --n, --temperature, --top-p, --max-new-tokens, --reward) set keys of these sections, and
`rollout.*` / `reward.*` overrides set the rest (`rollout.vllm.gpu_memory_utilization=0.3`,
`reward.kwargs.method=flexible`), with the validation and error messages of a training config.
"""

from __future__ import annotations

from rlkit.config.algorithm import RewardConfig
from rlkit.config.base import Section
from rlkit.config.rollouts import RolloutConfig

SECTIONS = ("rollout", "reward")


class EvalSections(Section):
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
