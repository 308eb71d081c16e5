"""The `bench` reward of `rlkit bench`: cheap, deterministic, and different from response to response.

A benchmark needs a reward that costs next to nothing (the reward phase then measures the trainer's own
overhead) yet varies within a group, so that GRPO's advantages are not all zero and the update does the
work it does in a real run. The score means nothing. Registered as ``reward.name: bench``.
"""

from __future__ import annotations

from typing import Any

from rlkit.registry import REWARDS

_VOWELS = frozenset("aeiouAEIOU")


@REWARDS.register("bench")
def vowel_fraction(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None) -> float:
    """The share of the response's letters that are vowels (0.0 when it has no letters).

    >>> vowel_fraction("bench", "a cat!", None)  # letters a, c, a, t: 2 vowels of 4
    0.5
    >>> vowel_fraction("bench", "123", None)
    0.0
    """
    letters = [char for char in solution_str if char.isalpha()]
    return sum(char in _VOWELS for char in letters) / len(letters) if letters else 0.0
