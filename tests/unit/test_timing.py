"""PhaseTimer: phases add up, and the cyclic garbage collector's seconds are counted inside them."""

import gc
import weakref

from rlkit import timing
from rlkit.timing import PhaseTimer


def cyclic_garbage(count: int) -> None:
    for _ in range(count):
        a, b = [], []
        a.append(b)
        b.append(a)


def test_a_phase_entered_twice_adds_up_and_reset_clears_everything():
    timer = PhaseTimer()
    with timer.phase("generate"):
        pass
    with timer.phase("generate"):
        pass
    metrics = timer.metrics()
    assert set(metrics) == {"time/generate", "time/gc"} and metrics["time/generate"] >= 0
    timer.reset()
    assert timer.metrics() == {"time/gc": 0.0}


def test_collections_inside_a_phase_count_in_time_gc_and_within_the_phase():
    timer = PhaseTimer()
    timer.reset()
    with timer.phase("generate"):
        cyclic_garbage(200_000)
        gc.collect()
    metrics = timer.metrics()
    assert 0 < metrics["time/gc"] <= metrics["time/generate"]


def test_every_live_timer_counts_and_a_dropped_one_is_not_kept_alive():
    first, second = PhaseTimer(), PhaseTimer()
    gone = weakref.ref(PhaseTimer())
    gc.collect()
    assert gone() is None and len([t for t in timing._LIVE_TIMERS if t in (first, second)]) == 2
    first.reset(), second.reset()
    gc.collect()
    assert first.gc_seconds > 0 and first.gc_seconds == second.gc_seconds
