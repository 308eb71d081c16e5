"""Python's cyclic collector during a run's steps (the trainers' and a rollout rank's loop).

The models, engines, data and imported libraries live for the whole run, yet each full collection during the steps
would walk them all again (counted in a step's `time/gc`, rlkit.timing). Collected once (so no garbage is kept) and
frozen (`gc.freeze`, as vLLM and SGLang do after their start-up), they drop out of every later collection; unfrozen
when the loop ends, so that a closed run's objects can be collected again. Python can only unfreeze everything: an
in-process vLLM's own freeze goes too, as the run is ending.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def frozen_heap() -> Iterator[None]:
    """What is alive on entry (less its garbage) is left alone by the collector until exit."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
