"""Reward functions in a worker process, so that a hung one can be stopped.

Python cannot stop a thread: a reward that never returns (a network call without a timeout, a regular
expression that backtracks for ever, which also holds the GIL) would pin the trainer for good. So the reward
functions a config names run in a worker process, one per trainer process, started at the first reward call:
the trainer sends one sample at a time and waits at most `reward.timeout_s` for its result. A call that takes
longer gets the worker killed (SIGKILL); that sample fails, with its index and the plugin named, and the next
call starts a fresh worker.

The cost: one more Python process per rank (about a second of imports at the first reward call, some tens of
MB), a pipe round trip per sample (tens of microseconds), and state: a function that keeps a cache or a
counter in its module keeps it in the worker, and a killed worker starts without it. Reward managers (a
class scoring whole batches, often with a reward model on the GPU) stay in the trainer process.

:class:`RewardWorker` starts it as ``python -c _WORKER_MAIN REQUESTS_FD REPLIES_FD PARENT_PID FROM_MAIN_THREAD``; it
resolves reward names through rlkit.registry.REWARDS as the trainer does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any

from rlkit.rewards.base import FunctionRewardManager, RewardManager, RewardOutput, RewardSample, split_result


_WORKER_MAIN = "import sys; from rlkit.rewards.worker import main; main(sys.argv[1:])"
_START_TIMEOUT_S = 300.0  # interpreter start-up plus the reward's imports (sympy for `math`: seconds)


class RewardTimeout(TimeoutError):
    pass


class RemoteRewardError(Exception):
    """An exception a reward raised in the worker, described by its type name and message."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


class RewardWorker:
    """One worker process that calls reward functions by name; killed after a timeout, restarted on demand."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None
        self._finalizer: weakref.finalize | None = None
        self._loaded: set[tuple[str, str]] = set()  # (name, kwargs) the running worker has imported

    def call(self, name: str, kwargs: dict[str, Any], sample: RewardSample, timeout_s: float | None) -> Any:
        """What the reward `name` (with `kwargs`) returns for `sample`. Raises RemoteRewardError for an exception
        in the reward, RewardTimeout after `timeout_s` (None: wait for ever) and RuntimeError when the worker
        dies. Starting the worker and importing the reward do not count against `timeout_s`."""
        key = (name, repr(sorted(kwargs.items())))
        if key not in self._loaded:
            self._ask(("load", name, kwargs), _START_TIMEOUT_S,
                      f"did not start and import it within {_START_TIMEOUT_S:g} s (the worker process was killed)")
            self._loaded.add(key)
        late = f"took longer than reward.timeout_s={timeout_s or 0:g} s (its worker process was killed)"
        return self._ask(("call", name, kwargs, sample), timeout_s, late)

    def close(self) -> None:
        """Kill the worker (if any); the next call starts another."""
        if self._finalizer is not None:
            self._finalizer()
        self._process = self._requests = self._replies = self._finalizer = None
        self._loaded.clear()

    def _ask(self, request: tuple, timeout_s: float | None, timeout_message: str) -> Any:
        if self._process is None:
            self._start()
        assert self._requests is not None and self._replies is not None
        try:
            self._requests.send(request)
            answered = self._replies.poll(timeout_s)
        except OSError:  # the worker died between calls: recv() below says so
            answered = True
        if not answered:
            self.close()
            raise RewardTimeout(timeout_message)
        try:
            ok, *payload = self._replies.recv()
        except (EOFError, OSError):
            code = self._process.wait() if self._process is not None else None
            self.close()
            raise RuntimeError(f"the reward worker process died (exit code {code})") from None
        if not ok:
            raise RemoteRewardError(*payload)
        return payload[0]

    def _start(self) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        try:
            process = subprocess.Popen(
                # PR_SET_PDEATHSIG follows the starting thread, not the process: only the main thread asks for it.
                [sys.executable, "-c", _WORKER_MAIN, str(request_read), str(reply_write), str(os.getpid()),
                 str(int(threading.current_thread() is threading.main_thread()))],
                pass_fds=(request_read, reply_write), env=env, stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(request_read)
            os.close(reply_write)
        self._process = process
        self._requests = Connection(request_write, readable=False)
        self._replies = Connection(reply_read, writable=False)
        self._finalizer = weakref.finalize(self, _stop, process, self._requests, self._replies)


def _stop(process: subprocess.Popen, *connections: Connection) -> None:
    for connection in connections:
        connection.close()
    if process.poll() is None:
        process.kill()
    process.wait()


class WorkerRewardFunction(RewardManager):
    """The reward function `name` (with `kwargs` bound), called in `worker`: what build_reward_manager makes of a
    function that a config names. Wrapped in a GuardedRewardManager, which passes reward.timeout_s."""

    def __init__(self, name: str, kwargs: dict[str, Any], worker: RewardWorker):
        super().__init__(**kwargs)
        self.name = name
        self.worker = worker

    def call_one(self, sample: RewardSample, timeout_s: float | None = None) -> Any:
        """The function's raw return value for one sample."""
        return self.worker.call(self.name, self.kwargs, sample, timeout_s)

    def __call__(self, samples: list[RewardSample]) -> RewardOutput:
        return RewardOutput.from_results([split_result(self.call_one(sample)) for sample in samples])


# -- the worker process ---------------------------------------------------------------------------------
def serve(requests: Connection, replies: Connection) -> None:
    """Answer ("load", name, kwargs) and ("call", name, kwargs, sample) with (True, result) or
    (False, type name, message) until the trainer closes the pipe."""
    from rlkit.registry import REWARDS

    functions: dict[tuple[str, str], FunctionRewardManager] = {}
    while True:
        try:
            kind, name, kwargs, *sample = requests.recv()
        except EOFError:
            return
        try:
            key = (name, repr(sorted(kwargs.items())))
            if key not in functions:
                functions[key] = FunctionRewardManager(REWARDS.get(name), name, kwargs)
            reply: tuple = (True, functions[key].call_one(sample[0]) if kind == "call" else None)
        except Exception as error:
            reply = (False, type(error).__name__, str(error))
        try:
            replies.send(reply)
        except Exception as error:  # a result that cannot be pickled
            what = f"returned a {type(reply[1]).__name__}, not a number: {error}"
            replies.send((False, type(error).__name__, what))


def _exit_with_parent(parent: int) -> None:
    """Exit once the trainer is gone (its kill -9 closes no pipe we would notice while a reward runs)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the trainer's main thread ends, even while a reward holds the
    GIL (where the watchdog thread below cannot run)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> None:
    # The trainer decides about stopping: a preemption signal or Ctrl-C sent to the whole process group must
    # not end a reward call half-way.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    requests_fd, replies_fd, parent, from_main_thread = (int(arg) for arg in argv)
    if from_main_thread:
        _die_with_parent()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    serve(Connection(requests_fd, writable=False), Connection(replies_fd, readable=False))

