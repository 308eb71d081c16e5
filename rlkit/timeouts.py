"""A call with a time limit, in a worker thread: what the tool box (rlkit.tools) and the reward guard
(rlkit.rewards.guard) use for code they cannot bound themselves.

Python cannot stop a thread: a call past its limit is abandoned and finishes in the background (its daemon
thread does not keep the process alive). Code that can hang for good, or holds the GIL while it runs, belongs
in a process that can be killed instead (rlkit.rewards.worker, the python tool).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def call_with_timeout(call: Callable[[], T], timeout_s: float | None, timeout_error: Callable[[], BaseException],
                      *, thread_name: str = "rlkit-call") -> T:
    """`call()`, run in a daemon thread named `thread_name` when `timeout_s` is set (None: run here, no limit).

    Returns what `call` returns and raises what it raises; raises `timeout_error()` (each caller names its own
    error and limit) when it has not finished after `timeout_s` seconds.
    """
    if timeout_s is None:
        return call()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, name=thread_name, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise timeout_error()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
