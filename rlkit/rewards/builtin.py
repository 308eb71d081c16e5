"""Registers the built-in rewards in REWARDS; the registry imports this module on its first lookup.

Also the table behind ``reward.name: auto``: which built-in scores which data_source.
"""

from __future__ import annotations

from rlkit.errors import PluginError
from rlkit.registry import REWARDS
from rlkit.rewards import bench as _bench  # noqa: F401  (registers 'bench' on import)
from rlkit.rewards import environment, gsm8k, letters, shaping
from rlkit.rewards import math as math_reward

REWARDS.register("gsm8k", gsm8k.compute_score)
REWARDS.register("math", math_reward.compute_score)
REWARDS.register("format", shaping.format_score)
REWARDS.register("length", shaping.length_score)
REWARDS.register("letters", letters.compute_score)
REWARDS.register("environment", environment.compute_score)

DEFAULT_REWARDS = {
    "openai/gsm8k": "gsm8k",
    "gsm8k": "gsm8k",
    "lighteval/MATH": "math",
    "DigitalLearningGmbH/MATH-lighteval": "math",
    "math": "math",
    "letters": "letters",
}


def default_reward_name(data_source: str) -> str:
    """The built-in reward for a data_source under `reward.name: auto`."""
    if data_source in DEFAULT_REWARDS:
        return DEFAULT_REWARDS[data_source]
    if "math" in data_source.lower():
        return "math"
    raise PluginError(
        f"no built-in reward for data_source '{data_source}' (built-ins know: {', '.join(DEFAULT_REWARDS)}, "
        f"and names containing 'math'); set reward.name, or reward.per_data_source: {{'{data_source}': <reward>}}"
    )
