"""MATH reward: 1.0 when math-verify finds the response's answer equivalent to the ground truth.

The ground truth is parsed as LaTeX; bare answers ("\\frac{1}{2}", "72") are wrapped in ``\\boxed{}``
first so that math-verify reads them whole. The response is parsed with math-verify's defaults (boxed
answers first, then the last LaTeX or plain expression).

Timeouts: math-verify bounds parse/verify with ``signal.alarm``, which works only on the main thread. In
rlkit's reward worker process (rlkit.rewards.worker) the reward runs on that process's main thread, so those
timeouts apply; called from another thread, its timeout is turned off and reward.timeout_s bounds the call
instead.
"""

from __future__ import annotations

import threading
from typing import Any

MATH_VERIFY_TIMEOUT_S = 5


def wrap_ground_truth(ground_truth: Any) -> str:
    text = str(ground_truth).strip()
    return text if "$" in text or "\\boxed" in text else f"\\boxed{{{text}}}"


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None) -> float:
    from math_verify import (  # imported here: sympy and latex2sympy load in ~1 s
        parse,
        verify,
    )

    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold = parse(wrap_ground_truth(ground_truth), parsing_timeout=timeout)
    if not gold:
        raise ValueError(f"math-verify cannot parse the ground truth {ground_truth!r}")
    answer = parse(solution_str, parsing_timeout=timeout)
    return 1.0 if answer and verify(gold, answer, timeout_seconds=timeout) else 0.0
