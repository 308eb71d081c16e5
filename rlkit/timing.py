"""Wall-clock timing of a training step's phases (`time/<phase>` metrics): the experience stage and the
trainer record into one PhaseTimer per run."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


class PhaseTimer:
    """Seconds per named phase since the last reset; a phase entered twice adds up."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.seconds: dict[str, float] = {}

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
        return {f"time/{name}": seconds for name, seconds in self.seconds.items()}

    def reset(self) -> None:
        self.seconds = {}
