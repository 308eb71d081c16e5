"""Wall-clock timing of a training step's phases (`time/<phase>` metrics): the experience stage and the
trainer record into one PhaseTimer per run. A timer also counts the seconds Python's cyclic garbage collector
ran (`time/gc`): they fall inside the phases, not beside them, and tell whether a slow phase was the collector
walking the process's heap (an in-process rollout engine generates inside the trainer's heap)."""

from __future__ import annotations

import gc
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import torch


class PhaseTimer:
    """Seconds per named phase since the last reset; a phase entered twice adds up."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.seconds: dict[str, float] = {}
        self.gc_seconds = 0.0
        _LIVE_TIMERS.add(self)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()  # time the phase's kernels, not just their launch
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {**{f"time/{name}": seconds for name, seconds in self.seconds.items()}, "time/gc": self.gc_seconds}

    def reset(self) -> None:
        self.seconds = {}
        self.gc_seconds = 0.0


# One collector callback for the process; a timer that is gone drops out of the set by itself.
_LIVE_TIMERS: weakref.WeakSet[PhaseTimer] = weakref.WeakSet()
_collection_started: float | None = None


def _on_collection(event: str, info: dict[str, Any]) -> None:
    global _collection_started
    if event == "start":
        _collection_started = time.perf_counter()
    elif _collection_started is not None:
        elapsed = time.perf_counter() - _collection_started
        _collection_started = None
        for timer in list(_LIVE_TIMERS):
            timer.gc_seconds += elapsed


gc.callbacks.append(_on_collection)
