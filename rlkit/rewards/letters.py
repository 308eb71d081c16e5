"""Reward of the built-in `letters` task ("repeat the letter X").

score = the fraction of the response's first 8 non-space characters that equal X (0.0 for an empty
response); extra ``acc`` = 1.0 when all of them do. Partial credit gives a tiny model a gradient to
climb before it gets whole answers right.
"""

from __future__ import annotations

from typing import Any

NUM_CHARS = 8


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None) -> dict:
    chars = [char for char in solution_str if not char.isspace()][:NUM_CHARS]
    if not chars:
        return {"score": 0.0, "acc": 0.0}
    num_right = sum(char == ground_truth for char in chars)
    return {"score": num_right / len(chars), "acc": float(num_right == len(chars))}
