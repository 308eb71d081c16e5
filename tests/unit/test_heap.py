"""rlkit.heap: what is alive on entry is frozen, its garbage collected first, and the freeze given back on exit."""

import gc
import weakref

import pytest

from rlkit.heap import frozen_heap


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self):
        self.me = self


def test_the_living_are_frozen_and_the_garbage_collected_first():
    alive, garbage = Node(), weakref.ref(Node())
    frozen_before = gc.get_freeze_count()
    with frozen_heap():
        assert garbage() is None  # not frozen with the living, where no collection would ever reach it
        assert gc.get_freeze_count() > frozen_before
        assert not any(obj is alive for obj in gc.get_objects())  # out of the collector's lists
    assert gc.get_freeze_count() == 0  # Python unfreezes everything
    assert any(obj is alive for obj in gc.get_objects())


def test_an_error_in_the_loop_gives_the_freeze_back():
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("a step failed")
    assert gc.get_freeze_count() == 0
