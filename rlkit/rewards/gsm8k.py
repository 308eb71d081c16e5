"""GSM8K reward: compare the response's final number with the ground truth, numerically.

``method="strict"`` reads the number after the last ``####`` (the format the GSM8K prompt asks for);
``method="flexible"`` reads the last number anywhere in the response. Thousands separators and ``$``
are removed, so "#### $1,200" equals "1200.00". Like verl's: ``score`` when right, ``format_score``
when a number was found but is wrong, 0.0 when none was found.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

NUMBER = r"-?\$?[\d,]*\.?\d+"
STRICT_ANSWER = re.compile(rf"####\s*({NUMBER})")
ANY_NUMBER = re.compile(NUMBER)


def extract_answer(response: str, method: Literal["strict", "flexible"] = "strict") -> str | None:
    """The final answer as written ("1,200"), or None when there is none."""
    if method not in ("strict", "flexible"):
        raise ValueError(f"method must be 'strict' or 'flexible', not {method!r}")
    pattern = STRICT_ANSWER if method == "strict" else ANY_NUMBER
    matches = pattern.findall(response)
    return matches[-1] if matches else None


def to_number(text: str) -> float | None:
    """'$1,200.50' -> 1200.5; None when it is not a number."""
    try:
        return float(text.replace(",", "").replace("$", "").strip())
    except ValueError:
        return None


def ground_truth_number(ground_truth: Any) -> float:
    """The ground truth as a number; a full GSM8K solution ("... #### 72") counts by its final line."""
    text = str(ground_truth)
    if "####" in text:
        text = text.split("####")[-1]
    number = to_number(text)
    if number is None:
        raise ValueError(f"ground truth {ground_truth!r} is not a number; the gsm8k reward needs one")
    return number


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    method: Literal["strict", "flexible"] = "strict",
    format_score: float = 0.0,
    score: float = 1.0,
) -> float:
    truth = ground_truth_number(ground_truth)
    answer = extract_answer(solution_str, method)
    if answer is None:
        return 0.0
    number = to_number(answer)
    if number is not None and math.isclose(number, truth, rel_tol=1e-9, abs_tol=1e-9):
        return score
    return format_score
