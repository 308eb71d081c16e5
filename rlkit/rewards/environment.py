"""The `environment` reward: the environment's own rewards (Step.reward), summed over the conversation's turns.

For environments that score the model themselves (a game, a simulated user, a test suite): set
`reward.name: environment`. It needs a trajectory, so it scores rollouts only.
"""

from __future__ import annotations

from typing import Any

from rlkit.trajectory import Trajectory


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  trajectory: Trajectory | None = None) -> float:
    if trajectory is None:
        raise ValueError("the 'environment' reward needs the conversation's trajectory, which only a rollout has")
    return trajectory.environment_reward
