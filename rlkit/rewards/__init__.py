"""Rewards: functions with verl's signature, batch-level managers, built-ins, and plugin loading.

The trainer needs :func:`build_reward_manager` (from RewardConfig) and :func:`samples_from_batch`;
plugins need :class:`RewardManager`, :class:`RewardSample` and :class:`RewardOutput`.
"""

from rlkit.rewards.base import (
    FunctionRewardManager,
    RewardManager,
    RewardOutput,
    RewardSample,
    samples_from_batch,
)
from rlkit.rewards.loading import build_reward_manager

__all__ = [
    "FunctionRewardManager",
    "RewardManager",
    "RewardOutput",
    "RewardSample",
    "build_reward_manager",
    "samples_from_batch",
]
