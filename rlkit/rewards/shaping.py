"""Shaping rewards, small examples of reward functions: a format check and a length target.

They are usually combined with a correctness reward in a plugin of your own (see docs/rewards.md).
"""

from __future__ import annotations

import re
from typing import Any

GSM8K_ANSWER_PATTERN = r"####\s*-?[\d,.]+"


def format_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    pattern: str = GSM8K_ANSWER_PATTERN,
) -> float:
    """1.0 when the response contains a match of ``pattern`` (re.search), else 0.0."""
    return 1.0 if re.search(pattern, solution_str) else 0.0


def length_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    target_length: int = 256,
) -> float:
    """1.0 at exactly ``target_length`` characters, falling linearly to 0.0 at 0 and 2 * target_length.

    score = max(0, 1 - |len(response) - target_length| / target_length)
    """
    if target_length < 1:
        raise ValueError(f"target_length must be at least 1, got {target_length}")
    return max(0.0, 1.0 - abs(len(solution_str) - target_length) / target_length)
