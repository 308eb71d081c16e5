"""Stopping a run on request: preemption signals and Ctrl-C.

Clusters send a signal some time before they kill a job (SIGTERM from SLURM and Kubernetes; SIGUSR1 where
SLURM is asked to, `--signal=USR1@120`). On any of `trainer.preempt_signals` the run finishes the step in
progress, saves a checkpoint and exits with PREEMPTED_EXIT_CODE, so that the job can be requeued and the same
command resumes from that step. Under torchrun a signal may reach only some ranks: at the end of every step the
ranks agree (a max all-reduce of the flag), so every rank stops after the same step and they save together.

Ctrl-C (SIGINT) stops at once without saving, as a kill would: the message names the step it stopped in and
the checkpoint the same command resumes from. Exit code INTERRUPTED_EXIT_CODE.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

from rlkit.distributed import all_reduce_max
from rlkit.errors import RunStopped

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "temporary failure, try again"
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report a Ctrl-C
log = logging.getLogger(__name__)


class StopRequests:
    """Listens for preemption signals while a training loop runs (a context manager) and turns Ctrl-C into
    a RunStopped that says where the run stopped.

    Args:
        signal_names: the signals that ask for a checkpoint and a clean exit ("SIGTERM", "SIGUSR1").
        progress: () -> (the step in progress or last finished, the newest checkpoint or None), for messages.
    """

    def __init__(self, signal_names: list[str], progress: Callable[[], tuple[int, Path | None]]):
        self.signals = [signal.Signals[name] for name in signal_names]
        self.progress = progress
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # Python runs handlers on the main thread only
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if kind is KeyboardInterrupt:
            raise self._interrupted() from None

    def agreed(self) -> bool:
        """Whether any rank received a preemption signal. Collective: every rank calls it after every step."""
        return all_reduce_max(1.0 if self.received is not None else 0.0) > 0

    def preempted(self, step: int, checkpoint: Path) -> RunStopped:
        """The RunStopped to raise once the checkpoint of `step` is saved."""
        cause = self.received.name if self.received is not None else "a preemption signal on another rank"
        return RunStopped(
            f"stopped after step {step} on {cause}: saved {checkpoint}; run the same command again to resume "
            f"from it (exit code {PREEMPTED_EXIT_CODE})",
            PREEMPTED_EXIT_CODE,
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            step, _ = self.progress()
            log.warning("received %s: finishing step %d, then saving a checkpoint and stopping",
                        signal.Signals(signum).name, step)
        self.received = signal.Signals(signum)

    def _interrupted(self) -> RunStopped:
        step, checkpoint = self.progress()
        resume = (f"the same command resumes from {checkpoint}" if checkpoint is not None
                  else "no checkpoint yet: the same command starts over")
        return RunStopped(f"interrupted (Ctrl-C) during step {step}; {resume}", INTERRUPTED_EXIT_CODE)
