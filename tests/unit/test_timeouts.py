"""rlkit.timeouts.call_with_timeout, which the tool box and the reward guard share."""

import threading

import pytest

from rlkit.timeouts import call_with_timeout


class Late(TimeoutError):
    pass


def test_a_call_within_its_limit_returns_or_raises_as_itself():
    assert call_with_timeout(lambda: 3, None, Late) == 3  # no limit: run in this thread
    assert call_with_timeout(lambda: 3, 5.0, Late) == 3
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, 5.0, Late)
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, None, Late)


def test_a_call_past_its_limit_raises_the_callers_error_and_runs_on_in_a_named_daemon_thread():
    release, finished = threading.Event(), threading.Event()
    threads = []

    def hang():
        threads.append(threading.current_thread())
        release.wait(10)
        finished.set()

    try:
        with pytest.raises(Late, match="past 0.05 s"):
            call_with_timeout(hang, 0.05, lambda: Late("past 0.05 s"), thread_name="rlkit-probe")
        assert threads[0].name == "rlkit-probe" and threads[0].daemon and threads[0].is_alive()
    finally:
        release.set()
    assert finished.wait(10)  # abandoned, not stopped: it finishes in the background


def test_without_a_limit_the_call_runs_in_the_callers_thread():
    seen = []
    call_with_timeout(lambda: seen.append(threading.current_thread()), None, Late)
    assert seen == [threading.current_thread()]
