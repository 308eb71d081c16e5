"""Guard a reward manager: timeouts, result checks and what a failure does (`reward.on_error`).

A failure is a reward that raises, runs past ``timeout_s`` (per sample; a batch manager's call gets
``timeout_s`` per sample it scores), returns something other than a finite number or a dict with a finite
``"score"``, or (a batch manager) returns the wrong number of scores.
With ``on_error="raise"`` it becomes a RewardError naming the sample index, its data_source and the
plugin; with ``"zero"`` the failed samples score 0.0, are counted in ``num_failures`` and one warning
per batch is logged.

Functions are guarded per sample, so one bad sample costs only its own score; a batch manager is
guarded per call. A function that runs in a RewardWorker (rlkit.rewards.worker) has its worker process killed
when it runs past the timeout; anything else runs in a worker thread, which Python cannot stop: a timed-out
call there is abandoned and finishes in the background.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, TypeVar

from rlkit.errors import RewardError
from rlkit.rewards.base import (
    FunctionRewardManager,
    RewardManager,
    RewardOutput,
    RewardSample,
    finite_score,
    split_result,
)
from rlkit.rewards.worker import RemoteRewardError, RewardTimeout, WorkerRewardFunction

logger = logging.getLogger(__name__)
T = TypeVar("T")


def call_with_timeout(call: Callable[[], T], timeout_s: float | None, limit: str = "") -> T:
    """``call()``, run in a daemon worker thread when ``timeout_s`` is set; ``limit`` says where the
    time limit comes from in the message (default: reward.timeout_s).

    Python cannot stop a thread: a timed-out call is abandoned and keeps running in the background.
    """
    if timeout_s is None:
        return call()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, name="rlkit-reward", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise RewardTimeout(f"took longer than {limit or f'reward.timeout_s={timeout_s:g} s'}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class GuardedRewardManager(RewardManager):
    """Wraps ``manager`` (named ``name`` in messages) with a timeout and checks of what it returns."""

    def __init__(
        self,
        manager: RewardManager,
        name: str,
        timeout_s: float | None = None,
        on_error: Literal["raise", "zero"] = "raise",
    ):
        super().__init__()
        self.manager = manager
        self.name = name
        self.timeout_s = timeout_s
        self.on_error = on_error

    def __call__(self, samples: list[RewardSample]) -> RewardOutput:
        if isinstance(self.manager, (FunctionRewardManager, WorkerRewardFunction)):
            return self._score_each(samples)
        return self._score_batch(samples)

    def _score_each(self, samples: list[RewardSample]) -> RewardOutput:
        results, failures = [], []
        for sample in samples:
            try:
                results.append(split_result(self._call_one(sample)))
            except Exception as error:
                failures.append(self._fail(error, [sample]))
                results.append((0.0, {}))
        self._warn(failures, len(samples))
        return RewardOutput.from_results(results, num_failures=len(failures))

    def _call_one(self, sample: RewardSample) -> Any:
        if isinstance(self.manager, WorkerRewardFunction):
            return self.manager.call_one(sample, timeout_s=self.timeout_s)
        assert isinstance(self.manager, FunctionRewardManager)
        return call_with_timeout(partial(self.manager.call_one, sample), self.timeout_s)

    def _score_batch(self, samples: list[RewardSample]) -> RewardOutput:
        timeout_s = self.timeout_s * max(len(samples), 1) if self.timeout_s is not None else None
        limit = f"{timeout_s:g} s (reward.timeout_s={self.timeout_s:g} s per sample)" if timeout_s else ""
        try:
            output = call_with_timeout(lambda: self.manager(samples), timeout_s, limit)
            check_output(output, len(samples))
        except Exception as error:
            self._warn([self._fail(error, samples)], len(samples))
            return RewardOutput([0.0] * len(samples), num_failures=len(samples))
        scores, failures = [], []
        for sample, score in zip(samples, output.scores):
            try:
                scores.append(finite_score(score, "score"))
            except (TypeError, ValueError) as error:
                failures.append(self._fail(error, [sample]))
                scores.append(0.0)
        self._warn(failures, len(samples))
        return RewardOutput(scores, output.extras, output.num_failures + len(failures))

    def _fail(self, error: Exception, samples: list[RewardSample]) -> str:
        """Raise a RewardError at once (on_error=raise), else return the failure's description."""
        if len(samples) == 1:
            where = f"sample {samples[0].index} (data_source '{samples[0].data_source}')"
        else:
            sources = ", ".join(sorted({sample.data_source for sample in samples}))
            where = f"the batch of samples {samples[0].index}..{samples[-1].index} (data_source {sources})"
        kind = error.type_name if isinstance(error, RemoteRewardError) else type(error).__name__
        message = f"reward '{self.name}' failed on {where}: {kind}: {error}"
        if self.on_error == "raise":
            raise RewardError(f"{message}; set reward.on_error=zero to score failures 0 and go on") from error
        return message

    def _warn(self, failures: list[str], num_samples: int) -> None:
        if failures:
            logger.warning(
                "%d of %d samples scored 0 after a failure; first: %s", len(failures), num_samples, failures[0]
            )


def check_output(output: Any, num_samples: int) -> None:
    """A manager's output must be a RewardOutput with one score (and one value per extra) per sample."""
    if not isinstance(output, RewardOutput):
        raise TypeError(f"returned {type(output).__name__}, not a RewardOutput")
    if len(output.scores) != num_samples:
        raise ValueError(f"returned {len(output.scores)} scores for {num_samples} samples")
    for name, values in output.extras.items():
        if len(values) != num_samples:
            raise ValueError(f"returned {len(values)} values of extra '{name}' for {num_samples} samples")
